#!/usr/bin/env bash
# Builds recur's CPU emulator of CUDA: a libcuda.so.1 that runs the kernels
# of ptx/src, compiled for the host, on the CPU (cuda-stub/emu/README.md).
#
#     bash cuda-stub/emu/build.sh [OUT_DIR]     # default: target/cuda-emu
#
# Then run GPU tests against it by putting OUT_DIR first on the loader's path
# (cuda-stub/emu/test.sh does this for the engine's tests). Needs g++ ≥ 12
# (C++20, _Float16) and python3; x86-64 only. Rebuilds only what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
emu="$root/cuda-stub/emu"
out="${1:-$root/target/cuda-emu}"
gen="$out/gen"
obj="$out/obj"
mkdir -p "$gen" "$obj"
CXX="${CXX:-g++}"
flags=(-std=c++20 -O2 -fPIC -fvisibility=hidden -ftls-model=initial-exec -fno-strict-aliasing
       -Wall -Wno-unknown-pragmas -Wno-unused-variable -Wno-unused-but-set-variable -Wno-unused-function -Wno-sign-compare
       -I "$emu" -I "$gen" -I "$root/ptx/src")
# f16 conversions as instructions (F16C) where this CPU has them, instead of
# libgcc's software routines: the same values (exact widening, rounding to
# nearest even), a fifth of an emulated f16 test's time otherwise. The
# library is built on the machine that loads it (test.sh), so the host's
# flag is the one that counts.
if grep -qw f16c /proc/cpuinfo 2>/dev/null; then
    flags+=(-mf16c)
fi

python3 "$emu/gen_tables.py" "$root" "$gen"

# An object is stale when its source, or any header or kernel source it may
# include, or the compiler flags (flags.txt, rewritten when they change) are
# newer.
if [[ "$(cat "$obj/flags.txt" 2>/dev/null)" != "$CXX ${flags[*]}" ]]; then
    printf '%s\n' "$CXX ${flags[*]}" > "$obj/flags.txt"
fi
newest_dep() {
    ls -t "$root"/ptx/src/* "$emu"/*.h "$gen"/*.inc "$obj/flags.txt" | head -1
}
dep="$(newest_dep)"
jobs=()
for src in "$gen"/*.cpp "$emu"/runtime.cpp "$emu"/driver.cpp; do
    o="$obj/$(basename "${src%.cpp}").o"
    if [[ ! -f "$o" || "$src" -nt "$o" || "$dep" -nt "$o" ]]; then
        jobs+=("$src")
    fi
done
compile() {
    local src="$1" o="$2/$(basename "${1%.cpp}").o"
    shift 2
    case "$(basename "$src")" in
        runtime.cpp|driver.cpp) "$CXX" "$@" -c "$src" -o "$o.tmp" ;;
        *) "$CXX" "$@" -include cuda_emu.h -c "$src" -o "$o.tmp" ;;
    esac
    mv "$o.tmp" "$o"
}
export -f compile
export CXX
if ((${#jobs[@]})); then
    echo "recur emu: compiling ${#jobs[@]} sources" >&2
    printf '%s\n' "${jobs[@]}" | xargs -P "$(nproc)" -I{} bash -c 'compile "$@"' _ {} "$obj" "${flags[@]}"
fi
lib="$out/libcuda.so.1"
if [[ ! -f "$lib" ]] || [[ -n "$(find "$obj" -name '*.o' -newer "$lib")" ]]; then
    "$CXX" -shared -Wl,-soname,libcuda.so.1 -o "$lib.tmp" "$obj"/*.o -lpthread
    mv "$lib.tmp" "$lib"
    ln -sf libcuda.so.1 "$out/libcuda.so"
fi
echo "$lib"
