# magnet_lab: two commands on a fresh Linux machine (see README.md).
#   make reports   set up, then execute every notebook on the embedded default (reports/, figures/)
#   make test      set up, then run the test suite (unit tests + every notebook in smoke mode)
PY = "$$(cat .magnet_lab-python)"

.PHONY: setup reports report-smoke test bench clean-reports

setup:
	@bash scripts/setup.sh

reports: setup
	$(PY) -m magnet_lab report

report-smoke: setup
	$(PY) -m magnet_lab report --smoke

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_spectra.py

clean-reports:
	rm -rf reports/
