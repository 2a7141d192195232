# daas-hub: two commands on a fresh Debian machine, as root:
#   make demo   installs everything the demo needs, then runs it in the foreground
#   make test   installs everything the tests need, then runs them all
#   make images builds every container image under images/ with podman and tests them
#
# Everything is installed under $(PREFIX) (a venv built with Debian's Python, the
# node packages) so that the unprivileged accounts sessions run as can use it.

PREFIX ?= /opt/daas-hub
VENV := $(PREFIX)/venv
NPM_DIR := $(PREFIX)/npm
SYSTEM_PYTHON ?= /usr/bin/python3
DEMO_DIR ?= /var/lib/daas-hub/demo
DEMO_URL ?= http://127.0.0.1:8000
PYTEST_ARGS ?=
# container images (docs/images.md): tagged $(IMAGE_PREFIX)/NAME:VERSION (VERSION from pyproject.toml)
IMAGE_PREFIX ?= localhost/daas-hub
IMAGE_CACHE ?= /var/cache/daas-hub
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_VERSION := $(VERSION)
# guacd (for the VM gateway's tests and the demo): built from the release source, cached
GUACD_VERSION := 1.6.0
GUACD_SHA256 := f214dde1aefcff8f88c49ab028dd0855d6ef76bfceffdad44000619cfd0ff716
GUACD_TARBALL ?= $(abspath $(CURDIR)/../shared/vendor/guacamole-server-$(GUACD_VERSION).tar.gz)
GUACD_DIR ?= /var/cache/daas-hub/guacd-$(GUACD_VERSION)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(VENV)/bin:$(PATH)
export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test images images-lock install-demo install-test apt-demo apt-test apt-slurm apt-images apt-guacd apt-vm-test guacd kube-apiserver python-demo python-test node project lint lock clean

demo: install-demo
	$(VENV)/bin/daas-hub demo --dir $(DEMO_DIR) --url $(DEMO_URL) --config $(CURDIR)/jupyterhub_config.py

# the tests that start no server, run again in a random order (its seed printed): a test
# that passes only after another one fails here
UNIT_TESTS := $(addprefix tests/,test_core.py test_options.py test_profiles.py test_settings.py test_policy.py \
  test_layout.py test_sources_yaml.py test_sources_cache.py test_sources_icat.py test_sources_scicat.py \
  test_oidc_unit.py test_spawn_form_context.py test_spawn_errors.py test_slurm_script.py test_desktop_units.py \
  test_quickstart_slurm.py test_helm_values.py test_kube_objects.py test_images_static.py test_operations_units.py \
  test_teams_units.py test_startqueue.py test_courses.py test_provenance.py test_sources_settings.py \
  test_singleuser.py test_kernels_units.py)

test: install-test
	$(VENV)/bin/ruff check .
	cd $(CURDIR) && $(VENV)/bin/pytest $(PYTEST_ARGS)
	cd $(CURDIR) && DAAS_TEST_SHUFFLE=$${DAAS_TEST_SHUFFLE:-$$RANDOM} $(VENV)/bin/pytest -q -p no:cacheprovider $(UNIT_TESTS)

install-demo: apt-demo python-demo node project
install-test: apt-demo apt-test apt-slurm apt-images apt-vm-test kube-apiserver python-test node project guacd

# every image under images/ (Debian base by mmdebstrap, wheelhouse from the locks, both
# cached in $(IMAGE_CACHE)), then the image tests on all of them; `make test` builds
# and tests only the session base.
images: apt-images python-test project
	IMAGE_PREFIX=$(IMAGE_PREFIX) CACHE_DIR=$(IMAGE_CACHE) VERSION=$(IMAGE_VERSION) PYTHON=$(VENV)/bin/python images/build.sh all
	cd $(CURDIR) && DAAS_HUB_IMAGES=all IMAGE_PREFIX=$(IMAGE_PREFIX) CACHE_DIR=$(IMAGE_CACHE) VERSION=$(IMAGE_VERSION) \
	  $(VENV)/bin/pytest tests/test_images.py tests/test_images_static.py $(PYTEST_ARGS)

# re-resolve images/*/requirements.lock from images/*/requirements.in (needs the package index)
images-lock: $(VENV)/bin/python
	PYTHON=$(VENV)/bin/python images/lock.sh $$(cd images && ls */requirements.in | xargs -n1 dirname)

# -- system packages: apt-get update once, then install what is missing
define apt_install
	@pkgs=$$(grep -v '^\s*#' $(1) | xargs); \
	missing=$$(for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done | xargs); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q; \
	  apt-get install -y -q --no-install-recommends $$missing; \
	fi; \
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  apt-get update -q; apt-get install -y -q --no-install-recommends nodejs npm; \
	fi
endef

apt-demo:
	$(call apt_install,requirements/apt-demo.txt)

apt-test:
	$(call apt_install,requirements/apt-test.txt)

apt-slurm:
	$(call apt_install,requirements/apt-slurm.txt)

# -- the Kubernetes backend's tests: etcd (Debian) and kube-apiserver built once from Debian's
#    source package (~12 min on 2 cores), cached in $(KUBE_CACHE_DIR), outside the repository
KUBE_CACHE_DIR ?= /var/cache/daas-hub
kube-apiserver:
	KUBE_CACHE_DIR=$(KUBE_CACHE_DIR) requirements/build-kube-apiserver.sh

apt-images:
	$(call apt_install,requirements/apt-images.txt)

apt-guacd:
	$(call apt_install,requirements/apt-guacd.txt)

apt-vm-test:
	$(call apt_install,requirements/apt-vm-test.txt)

# -- guacd from its release source, into a cache outside the repository (docs/desktops.md)
guacd: apt-guacd
	requirements/build-guacd.sh $(GUACD_TARBALL) $(GUACD_SHA256) $(GUACD_DIR)

# -- Python: a venv with Debian's python3, world-readable, from the lock files
$(VENV)/bin/python:
	umask 022; install -d -m 0755 $(PREFIX)
	umask 022; $(SYSTEM_PYTHON) -m venv $(VENV)

define pip_lock
	@stamp=$(VENV)/.$(1).sha; sum=$$(cat requirements/$(1) requirements/build.txt | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $$stamp 2>/dev/null)" != "$$sum" ]; then \
	  umask 022; \
	  $(VENV)/bin/pip install -q -r requirements/build.txt; \
	  $(VENV)/bin/pip install -q -r requirements/$(1); \
	  echo $$sum > $$stamp; \
	fi
endef

python-demo: $(VENV)/bin/python
	$(call pip_lock,demo.lock)

python-test: $(VENV)/bin/python
	$(call pip_lock,test.lock)

# -- node: configurable-http-proxy (and the tests' OpenID provider), from the lock
node:
	@if ! cmp -s package-lock.json $(NPM_DIR)/package-lock.json || [ ! -d $(NPM_DIR)/node_modules ]; then \
	  umask 022; install -d -m 0755 $(NPM_DIR); \
	  cp package.json package-lock.json $(NPM_DIR)/; \
	  cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error; \
	fi
	ln -sf $(NPM_DIR)/node_modules/.bin/configurable-http-proxy $(VENV)/bin/configurable-http-proxy
	umask 022; install -D -m 0644 -t $(VENV)/share/daas-hub/guacamole-common-js \
	  $(NPM_DIR)/node_modules/guacamole-common-js/dist/cjs/guacamole-common.js \
	  $(NPM_DIR)/node_modules/guacamole-common-js/LICENSE

# -- daas-hub itself, installed (not editable) so session accounts can read it
project: $(VENV)/bin/python
	umask 022; $(VENV)/bin/pip install -q --no-deps --no-build-isolation --force-reinstall $(CURDIR)
	rm -rf $(CURDIR)/build
	umask 022; install -D -m 0644 images/singleuser/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json

lint:
	$(VENV)/bin/ruff check .

# -- regenerate the lock files from pyproject.toml (needs the registries)
lock:
	rm -rf $(PREFIX)/lockvenv
	$(SYSTEM_PYTHON) -m venv $(PREFIX)/lockvenv
	$(PREFIX)/lockvenv/bin/pip install -q -r requirements/build.txt
	$(PREFIX)/lockvenv/bin/pip install -q "$(CURDIR)[demo]"
	{ echo '# Locked set for `make demo` (daas-hub[demo]); regenerate with `make lock`.'; \
	  $(PREFIX)/lockvenv/bin/pip freeze --exclude daas-hub; } > requirements/demo.lock
	$(PREFIX)/lockvenv/bin/pip install -q "$(CURDIR)[test]"
	{ echo '# Locked set for `make test` (daas-hub[test]); regenerate with `make lock`.'; \
	  $(PREFIX)/lockvenv/bin/pip freeze --exclude daas-hub; } > requirements/test.lock
	rm -rf $(PREFIX)/lockvenv

clean:
	rm -rf build *.egg-info test-output .pytest_cache
