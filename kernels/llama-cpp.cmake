# Included after llama.cpp's project() call (CMAKE_PROJECT_INCLUDE, set in .cargo/config.toml
# and forwarded to cmake by llama-cpp-sys-2).
#
# llama-cpp-2 turns on the binding's `common` feature, which builds llama.cpp's common library
# (chat templates, argument parsing, JSON grammars): socbench drives decoding itself and calls
# none of it, so it is not compiled. That is about two fifths of llama.cpp's objects, in the
# host build and in the arm64 agent's.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)

# The x86-64 instruction sets llama.cpp's CPU backend is compiled for: those of the machine
# that builds it (a host build runs where it was built: `cargo run`), read from the kernel's
# /proc/cpuinfo at every configure, one `GGML_*` option per extension. Not `-march=native`
# (GGML_NATIVE): on the Sapphire Rapids KVM guests here it also turned on AMX, whose tiles
# the guest's kernel does not hand out, and the binaries died with SIGILL. AMX stays off
# unless asked for. An option set in the environment (e.g. `GGML_AVX512=OFF`, to build for
# a CPU without AVX-512 on one with it) is the user's and is kept. What was configured is
# recorded in the cmake cache, which `kernels/build.rs` reads so that the program checks the
# CPU it runs on against it (`socbench_kernels::llamacpp::cpu_support`).
# `SOCBENCH_CPUINFO` names another file to read (the tests describe other CPUs with it).
if(DEFINED ENV{SOCBENCH_CPUINFO})
  set(_socbench_cpuinfo "$ENV{SOCBENCH_CPUINFO}")
else()
  set(_socbench_cpuinfo /proc/cpuinfo)
endif()
if(NOT CMAKE_CROSSCOMPILING
   AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$"
   AND EXISTS "${_socbench_cpuinfo}")
  file(STRINGS "${_socbench_cpuinfo}" _socbench_flags REGEX "^flags[ \t]*:" LIMIT_COUNT 1)
  string(REGEX REPLACE "^flags[ \t]*:[ \t]*" " " _socbench_flags "${_socbench_flags} ")
  # option | the /proc/cpuinfo flags it needs (ggml's CMakeLists: GGML_AVX512 compiles with
  # -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw)
  set(_socbench_map
      "GGML_SSE42|sse4_2"
      "GGML_AVX|avx"
      "GGML_AVX2|avx2"
      "GGML_FMA|fma"
      "GGML_F16C|f16c"
      "GGML_BMI2|bmi2"
      "GGML_AVX_VNNI|avx_vnni"
      "GGML_AVX512|avx512f,avx512cd,avx512vl,avx512dq,avx512bw"
      "GGML_AVX512_VBMI|avx512vbmi"
      "GGML_AVX512_VNNI|avx512_vnni"
      "GGML_AVX512_BF16|avx512_bf16")
  set(_socbench_on "")
  foreach(_entry IN LISTS _socbench_map)
    string(REPLACE "|" ";" _pair "${_entry}")
    list(GET _pair 0 _option)
    list(GET _pair 1 _needs)
    if(DEFINED ENV{${_option}})
      if("$ENV{${_option}}")
        list(APPEND _socbench_on "${_option}(env)")
      endif()
      continue()
    endif()
    set(_value ON)
    # AVX-512's extensions need AVX-512 itself (turned off in the environment, say).
    if(_option MATCHES "^GGML_AVX512_" AND NOT GGML_AVX512)
      set(_value OFF)
    endif()
    string(REPLACE "," ";" _needs "${_needs}")
    foreach(_flag IN LISTS _needs)
      if(NOT _socbench_flags MATCHES " ${_flag} ")
        set(_value OFF)
      endif()
    endforeach()
    set(${_option} ${_value} CACHE BOOL "socbench: detected in /proc/cpuinfo" FORCE)
    if(_value)
      list(APPEND _socbench_on "${_option}")
    endif()
  endforeach()
  foreach(_option GGML_AMX_TILE GGML_AMX_INT8 GGML_AMX_BF16)
    if(NOT DEFINED ENV{${_option}})
      set(${_option} OFF CACHE BOOL "socbench: AMX only when asked for" FORCE)
    endif()
  endforeach()
  message(STATUS "socbench: llama.cpp for this CPU: ${_socbench_on}")
endif()
