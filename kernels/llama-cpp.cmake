# Included after llama.cpp's project() call (CMAKE_PROJECT_INCLUDE, set in .cargo/config.toml
# and forwarded to cmake by llama-cpp-sys-2). llama-cpp-2 turns on the binding's `common`
# feature, which builds llama.cpp's common library (chat templates, argument parsing, JSON
# grammars): socbench drives decoding itself and calls none of it, so it is not compiled.
# That is about two fifths of llama.cpp's objects, in the host build and in the arm64 agent's.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "" FORCE)
