# The CPU backend's compile flags, one set per instruction set. Each SIMD file gets its
# own target flags (never -march=native): kern.c picks one at run time after checking the
# CPU. -ffp-contract=off on every file of the folder keeps the float sums exactly as
# written (no fused multiply-adds the source does not ask for).
set(d ${CMAKE_CURRENT_LIST_DIR})
set(CTN_CPU_AVX2 "-mavx2;-mfma;-mf16c")
set(CTN_CPU_AVX512 "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma;-mf16c")
set(CTN_CPU_AVX512_VNNI "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c")
set(CTN_CPU_AMX "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mfma;-mf16c;-mamx-tile;-mamx-int8")
file(GLOB ctn_cpu_all ${d}/*.c)
set_source_files_properties(${ctn_cpu_all} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
set_source_files_properties(${d}/kern_avx2.c ${d}/lora_avx2.c ${d}/attn_avx2.c
  PROPERTIES COMPILE_OPTIONS "${CTN_CPU_AVX2};-ffp-contract=off")
set_source_files_properties(${d}/kern_avx512.c
  PROPERTIES COMPILE_OPTIONS "${CTN_CPU_AVX512_VNNI};-ffp-contract=off")
set_source_files_properties(${d}/lora_avx512.c
  PROPERTIES COMPILE_OPTIONS "${CTN_CPU_AVX512};-ffp-contract=off")
# Attention's value sums need AVX-512F alone.
set_source_files_properties(${d}/attn_avx512.c
  PROPERTIES COMPILE_OPTIONS "-mavx512f;-mfma;-mf16c;-ffp-contract=off")
set_source_files_properties(${d}/kern_amx.c ${d}/kern_amx_k.c
  PROPERTIES COMPILE_OPTIONS "${CTN_CPU_AMX};-ffp-contract=off")
