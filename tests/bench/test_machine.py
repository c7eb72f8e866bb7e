"""The bench's record of the machine: the CPU, so that numbers from two machines are never compared unawares."""

from __future__ import annotations

from chorus.bench.load import cpu_model

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512bw

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: not the first core
"""


def test_cpu_model_names_family_model_and_avx512() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC (family 25, model 17), AVX-512"


def test_cpu_model_without_avx512_or_family() -> None:
    text = "model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t: sse2 avx2\n"
    assert cpu_model(text) == "Intel(R) Xeon(R) CPU @ 2.20GHz"


def test_cpu_model_of_this_machine_is_not_empty() -> None:
    assert cpu_model().strip()
