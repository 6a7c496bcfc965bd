//! The root package of the hsm-est workspace holds no product code: the crates under `src/`
//! do (see `docs/ARCHITECTURE.md`). This library exists so that the end-to-end tests in
//! `tests/` and the benchmark in `examples/` have a package to live in.
#![forbid(unsafe_code)]
