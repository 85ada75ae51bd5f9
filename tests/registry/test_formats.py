"""Model files are told apart by their bytes: pickles of every protocol are refused unread, and
a text file that merely opens like an old pickle is not called one."""

import pickle

import pytest

from atelier.core.errors import UnsupportedMediaType
from atelier.registry.formats import PickleRefused, detect

pytestmark = pytest.mark.backend_independent


class Trap:
    def __reduce__(self):
        return (print, ("a pickle was loaded",))


OBJECTS = {
    "trap": Trap(),
    "list": [1, 2, 3],
    "dict": {"a": 1},
    "long list": list(range(500)),  # longer than what detection reads
    "nested": {"weights": [[0.5] * 40] * 10, "name": "model"},
}


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("name", OBJECTS)
def test_pickles_of_every_protocol_are_refused(tmp_path, protocol, name):
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps(OBJECTS[name], protocol=protocol))
    with pytest.raises(PickleRefused):
        detect(path)


@pytest.mark.parametrize(
    "text",
    [
        b"col1,col2\n1,2\n",
        b"(hello world)\n",
        b"(defun model () 1)\n" * 40,
        b"c = 1\nprint(c)\n",
        b"}\n",
        b"] closing notes\n" * 30,
    ],
)
def test_text_that_opens_like_an_old_pickle_is_not_called_one(tmp_path, text):
    path = tmp_path / "notes.txt"
    path.write_bytes(text)
    with pytest.raises(UnsupportedMediaType) as raised:
        detect(path)
    assert not isinstance(raised.value, PickleRefused)
    assert "ONNX" in raised.value.detail
