"""Operations: health and readiness, metrics exposition, migrations, and the doctor's checks."""
