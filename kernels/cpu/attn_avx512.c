/* Attention value accumulation with AVX-512F (attn_simd.h; flags in CMakeLists.txt). */
#include <immintrin.h>

#define VEC       __m512
#define W         16
#define VLOAD     _mm512_loadu_ps
#define VSTORE    _mm512_storeu_ps
#define VSET1     _mm512_set1_ps
#define VFMA      _mm512_fmadd_ps
#define LOAD_H(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define ATTN_NAME ctn__attn_avx512

#include "attn_simd.h"
