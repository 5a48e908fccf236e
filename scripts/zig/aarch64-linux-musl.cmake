# CMake toolchain for llama.cpp in the static arm64 agent (scripts/build-agent): zig's clang
# for aarch64-linux-musl through the wrappers beside this file.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER ${CMAKE_CURRENT_LIST_DIR}/cc)
set(CMAKE_CXX_COMPILER ${CMAKE_CURRENT_LIST_DIR}/c++)
set(CMAKE_AR ${CMAKE_CURRENT_LIST_DIR}/ar CACHE FILEPATH "" FORCE)
set(CMAKE_RANLIB ${CMAKE_CURRENT_LIST_DIR}/ranlib CACHE FILEPATH "" FORCE)
# Configure-time checks compile without linking: no C library to build for them.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# The CPU baseline ggml's CPU backend is compiled for. llama-cpp-sys-2 fixes `armv8-a` for
# aarch64 Linux; the agent's baseline (GGML_CPU_ARM_ARCH in the environment, set by
# scripts/build-agent) replaces it, and the agent checks it against the phone's CPU at run
# time (socbench_kernels::llamacpp::cpu_support).
if(DEFINED ENV{GGML_CPU_ARM_ARCH})
  set(GGML_CPU_ARM_ARCH "$ENV{GGML_CPU_ARM_ARCH}" CACHE STRING "" FORCE)
endif()
