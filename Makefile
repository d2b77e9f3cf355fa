# Thin wrapper over CMake. `make demo` and `make test` set up a fresh Debian 12
# machine first (scripts/deps.sh installs what is missing; a no-op otherwise).
BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
BENCH   ?=
CTEST_FLAGS ?=

FUZZ_TIME ?= 300

.PHONY: all deps configure test demo bench install clean format fuzz valgrind

all: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@sh scripts/deps.sh

configure:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

test: deps all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 300 $(CTEST_FLAGS)

# Every fuzz target for FUZZ_TIME seconds (clang, build-fuzz/).
fuzz:
	.ci/fuzz $(FUZZ_TIME)

# valgrind memcheck over the suites it fits (see .ci/valgrind).
valgrind: all
	.ci/valgrind $(BUILD)

demo: deps all
	@sh scripts/demo.sh $(BUILD)

bench: deps all
	python3 bench/run.py --build $(BUILD) $(if $(BENCH),--family $(BENCH),)

install: configure
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
	cmake --install $(BUILD) --prefix $(PREFIX)

format:
	clang-format -i include/*.h include/mproc/*.h src/*.c src/*.h tests/*.c tests/*.h \
	  examples/*.c bench/*.c bench/*.h $$(find tools -name '*.[ch]')

clean:
	rm -rf $(BUILD)
