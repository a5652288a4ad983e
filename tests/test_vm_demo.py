from pykvmmu.commands import cvm


def test_demo_scene_runs_and_reports():
    lines = []
    cvm.demo(lines.append)
    text = "\n".join(lines)
    assert cvm.DEMO_ORDER == 60
    for s in ("SNP guest", "TDX guest", "KVM_EXIT_MEMORY_FAULT", "SNP_PAGE_MOVE",
              "TDH.MEM.PAGE.RELOCATE", "retry", "page freed", "MMIO SPTE installed"):
        assert s in text, s


def test_cli_subcommands(capsys):
    from pykvmmu.cli import main
    assert main(["cvm", "decode-ec", "0x400000003"]) == 0
    assert "GUEST_ENC" in capsys.readouterr().out
    assert main(["cvm", "policies"]) == 0
    assert "three-way" in capsys.readouterr().out
