# WNoDeS - worker nodes on demand. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
IMAGES := var/images
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static cpio e2fsprogs debootstrap linux-image-amd64 \
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
	etcd-server etcd-client python3-venv python3-dev slurm-wlm slurmdbd mariadb-server munge \
	libcurl4-openssl-dev openssh-client libguestfs-tools python3-guestfs

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: setup
setup: apt $(VENV_STAMP) images libvirt ## Install what is missing (apt, venv, guest images, libvirtd); idempotent

.PHONY: apt
# policy-rc.d keeps package scripts from starting daemons (libvirtd would start its NAT network):
# we start what we need ourselves, in deploy/scripts/libvirt_up.sh.
apt: ## Install the Debian packages (only those missing)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "apt: installing $$missing"; \
	  policy=/usr/sbin/policy-rc.d; own=0; [ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; own=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
	  [ $$own = 0 ] || rm -f $$policy; exit $$rc; fi

# The venv is built on Debian's /usr/bin/python3, not a python under /root: batch jobs of
# ordinary users run the LRMS program from it, so the interpreter must be readable by them.
$(VENV_STAMP): pyproject.toml
	@grep -qs '^home = /usr/bin' .venv/pyvenv.cfg || { rm -rf .venv; /usr/bin/python3 -m venv .venv; }
	@.venv/bin/pip install -q --upgrade pip
	@.venv/bin/pip install -q -e '.[dev]' libvirt-python
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/protos" > $$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/wnodes-paths.pth
	@# python3-guestfs (image customisation) exists only as a Debian package, not on PyPI:
	@# appended last so the venv's own packages always win over Debian's.
	@echo /usr/lib/python3/dist-packages > $$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/zz-debian-dist-packages.pth
	@touch $@

.PHONY: images
images: $(VENV_STAMP) ## Build the default guest images (tiny, debian12) from Debian packages
	@$(PY) deploy/images/build.py --out $(IMAGES)

.PHONY: libvirt
libvirt: ## Start virtlogd and libvirtd if they are not running (no systemd here)
	@bash deploy/scripts/libvirt_up.sh

.PHONY: protos
protos: $(VENV_STAMP) ## Regenerate the Python stubs from protos/
	@bash deploy/scripts/gen_protos.sh

.PHONY: check-protos
check-protos: $(VENV_STAMP) ## Fail if the committed stubs are stale
	@bash deploy/scripts/gen_protos.sh >/dev/null
	@git diff --exit-code --stat -- protos/ || { echo "generated code is stale: run 'make protos' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- protos/)" || { git status --short -- protos/; echo "untracked generated files: run 'make protos' and commit"; exit 1; }

.PHONY: lint
lint: $(VENV_STAMP) ## ruff + mypy (strict)
	@.venv/bin/ruff check services clients deploy tests bench
	@.venv/bin/mypy services clients deploy bench

# pOCCI (CESNET's OCCI compliance suite) needs old setuptools and pycurl: a venv of its own.
# 1.0.3's sdist is broken; 1.0.2 has the same code. Python 3.11 rejects four of its regexes
# ("^(?i)"): move the inline flag to the front (docs: shared/occi/README.md).
POCCI_STAMP := .venv-pocci/.installed
$(POCCI_STAMP):
	@test -x .venv-pocci/bin/python || /usr/bin/python3 -m venv .venv-pocci
	@.venv-pocci/bin/pip install -q "setuptools<58" wheel pycurl
	@.venv-pocci/bin/pip install -q --no-build-isolation pOCCI==1.0.2
	@F=$$(.venv-pocci/bin/python -c 'import pOCCI,os;print(os.path.dirname(pOCCI.__file__))')/render_text.py; \
	  sed -i -e "s/r'^(?i)/r'(?i)^/" -e "s/r'^((?i)x-occi-location|location)/r'(?i)^(x-occi-location|location)/" "$$F"; \
	  find "$$(dirname "$$F")" -name __pycache__ -prune -exec rm -rf {} +
	@.venv-pocci/bin/pOCCI -l >/dev/null
	@touch $@

.PHONY: pocci
pocci: $(POCCI_STAMP) ## The OCCI compliance suite in .venv-pocci (used by the OCCI tests)

.PHONY: test
test: setup pocci check-protos lint ## Everything CI runs: unit, contract, integration (real etcd), end to end (real VMs)
	@$(PY) -m pytest -q -p no:cacheprovider tests

.PHONY: test-fast
test-fast: $(VENV_STAMP) pocci ## The inner loop: unit and contract tests only (seconds)
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/contract

.PHONY: chaos
chaos: setup ## The full chaos set: SIGKILL each component, then pairs, under load; quorum loss; invariants
	@$(PY) -m tests.chaos.run

.PHONY: run
run: setup ## Bring the stack up, show VMs doing work, keep it up until Ctrl-C
	@$(PY) -m clients.demo

.PHONY: bench
bench: setup ## Benchmarks: time to job vs direct QEMU/libvirt, placement throughput, memory, scale (1,000 hosts)
	@$(PY) -m bench.run
