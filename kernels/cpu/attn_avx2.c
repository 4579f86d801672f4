/* Attention value accumulation with AVX2+FMA+F16C (attn_simd.h; flags in CMakeLists.txt). */
#include <immintrin.h>

#define VEC       __m256
#define W         8
#define VLOAD     _mm256_loadu_ps
#define VSTORE    _mm256_storeu_ps
#define VSET1     _mm256_set1_ps
#define VFMA      _mm256_fmadd_ps
#define LOAD_H(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define ATTN_NAME ctn__attn_avx2

#include "attn_simd.h"
