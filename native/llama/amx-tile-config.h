// Force-included into llama.cpp's sources by scripts/build-llama.mjs when the compiler's
// amxtileintrin.h has the bug this works around (GCC 12 here, Debian 12's): its _tile_loadconfig is
// an asm statement whose memory operand is `*(const void **)config`, so the compiler believes
// LDTILECFG reads 8 bytes of the 64-byte tile configuration and drops the stores to the rest. ggml's
// AMX kernels then load a configuration of stack garbage: SIGSEGV on the first prompt on Intel CPUs
// with AMX (seen in the disassembly of ggml_backend_amx_mul_mat: only palette_id and 32 zeroed bytes
// are stored before ldtilecfg). The same instruction, told it reads all 64 bytes.
#pragma once
#if defined(__x86_64__) && defined(__AMX_TILE__) && !defined(__clang__)
#include <immintrin.h>
#undef _tile_loadconfig
#define _tile_loadconfig(config) \
  __asm__ volatile("ldtilecfg\t%X0" ::"m"(*(const unsigned char(*)[64])(config)))
#endif
