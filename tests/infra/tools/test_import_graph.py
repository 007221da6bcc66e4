"""The import-graph report: package edges and the cycles between them."""

from infra.tools.import_graph import cycles, package_of, report


def test_modules_fold_into_their_package() -> None:
    assert package_of("services.jobs.store", "services") == "services.jobs"
    assert package_of("services.settings", "services") == "services.settings"


def test_cycles_are_found_through_a_third_package() -> None:
    pairs = {("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}
    assert cycles(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_the_services_packages_have_no_cycle() -> None:
    lines = report(["services"])
    assert not [line for line in lines if line.startswith("CYCLE")]
    assert lines[-1].endswith(", 0 cyclic pairs")
