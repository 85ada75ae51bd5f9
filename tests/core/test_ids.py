import pytest

from atelier.core.ids import is_id, new_id


def test_ids_carry_their_prefix_and_are_unique():
    ids = {new_id("ds") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_id(i, "ds") for i in ids)
    assert all(len(i) == len("ds_") + 24 for i in ids)


def test_ids_are_not_sequential():
    a, b = new_id("job"), new_id("job")
    assert a[4:10] != b[4:10]


@pytest.mark.parametrize("value", ["ds_", "job_" + "a" * 24, "ds_" + "A" * 24, "ds-" + "a" * 24])
def test_foreign_shapes_are_not_ids(value):
    assert not is_id(value, "ds")


@pytest.mark.parametrize("prefix", ["", "DS", "9x", "toolongprefix", "a_b"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(ValueError):
        new_id(prefix)
