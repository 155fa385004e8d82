import pytest

from medfound.errors import ConfigError
from medfound.sizes import parse_sizes


def test_sizes_are_read_with_commas_or_x():
    assert parse_sizes("64,64,32", "cube", 3) == (64, 64, 32)
    assert parse_sizes("64x64x32", "cube") == (64, 64, 32)
    assert parse_sizes("1.5,1,2", "spacing", 3, float) == (1.5, 1.0, 2.0)


@pytest.mark.parametrize("text", ["64,64", "64,a,32", "", "1.5,2,2"])
def test_bad_sizes_name_the_field(text):
    with pytest.raises(ConfigError, match=r"cube .*expected 3 comma-separated numbers"):
        parse_sizes(text, "cube", 3)
