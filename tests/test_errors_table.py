"""The one table of rule texts (csrc/errors.h): every error code the C core defines has
exactly one row, and each module's messages are derived from it."""
import os
import re
import string

from pykvmmu import errors
from pykvmmu._ffi import lib

CODE = re.compile(r"KVMMU_(?:[A-Z0-9]+_)?E_[A-Z0-9_]+")
DOMAINS = {"KVMMU_E_": "spte", "KVMMU_MMIO_E_": "mmio", "KVMMU_ROLE_E_": "role",
           "KVMMU_RMP_E_": "rmp", "KVMMU_PF_E_": "private", "KVMMU_VM_E_": "vm"}


def test_every_code_has_one_row():
    codes = {n for n in dir(lib) if CODE.fullmatch(n)}
    rows = errors.error_rows()
    names = [name for _, name, _, _ in rows]
    assert len(names) == len(set(names))
    assert set(names) == codes
    for dom, name, code, text in rows:
        assert getattr(lib, name) == code and code != 0, name
        assert DOMAINS[name[:name.index("_E_") + 3]] == dom, name
        assert text and text == text.strip(), name
    for dom in set(DOMAINS.values()):
        assert len(errors.rule_texts(dom)) == sum(d == dom for d, *_ in rows), dom


def test_every_code_the_c_sources_return_has_a_row():
    csrc = os.path.join(os.path.dirname(__file__), os.pardir, "csrc")
    used = set()
    for f in os.listdir(csrc):
        if f.endswith(".c"):
            used |= set(CODE.findall(open(os.path.join(csrc, f)).read()))
    assert used <= {name for _, name, _, _ in errors.error_rows()}


def test_format_fields_are_named():
    for _, name, _, text in errors.error_rows():
        for _, field, spec, _ in string.Formatter().parse(text):
            assert field is None or field.isidentifier(), (name, field)


def test_module_tables_are_derived():
    from pykvmmu import mmio, spte
    from pykvmmu.role import eras
    assert spte._ERRORS == errors.rule_texts("spte")
    assert mmio._ERRORS == errors.rule_texts("mmio")
    assert eras._ERRS == errors.rule_texts("role")
    assert mmio._ERRORS[lib.KVMMU_MMIO_E_GFN].startswith(f"gfn must fit in {mmio.GFN_BITS} bits")


def test_texts_unchanged():
    """The texts the modules had before the table (tests elsewhere match parts of them)."""
    t = errors.rule_texts
    assert t("spte")[lib.KVMMU_E_PFN] == ("pfn does not fit the configuration's PFN mask "
                                          "(SPTE_BASE_ADDR_MASK)")
    assert t("spte")[lib.KVMMU_E_NOT_PRESENT] == "the SPTE is not shadow-present"
    assert t("mmio")[lib.KVMMU_MMIO_E_IN_PROGRESS] == (
        "generation has the update-in-progress bit 63 (WARN in kvm_mmu_invalidate_mmio_sptes)")
    assert t("role")[lib.KVMMU_ROLE_E_RESERVED] == "bits set outside every field of the era's layout"
    assert t("rmp")[lib.KVMMU_RMP_E_RANGE].format(pfn=0x10, nr_pfns=0x8) == (
        "pfn 0x10 is beyond the RMP (covers 0x8 pages)")
    assert t("private")[lib.KVMMU_PF_E_RANGE] == "a range has start >= end"
