import pytest

from lmkit.schemes import SCHEMES, scheme_for_points


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=lambda s: s.name)
def test_groups_cover_every_point_once(scheme):
    covered = sorted(i for g in scheme.groups for i in g.indices)
    assert covered == list(range(scheme.n_points))
    assert scheme.group(scheme.left_eye) and scheme.group(scheme.right_eye)


def test_scheme_for_points():
    assert scheme_for_points(194).name == "helen194"
    assert scheme_for_points(68).name == "ibug68"
    with pytest.raises(ValueError, match="no landmark scheme has 5 points"):
        scheme_for_points(5)
