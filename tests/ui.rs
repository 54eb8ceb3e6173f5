//! trybuild UI tests: every misuse of the macros is a compile error at the offending token, with
//! a message that says what to do. The expected messages are in `tests/ui/*.stderr`; after a
//! deliberate change, regenerate them with `TRYBUILD=overwrite cargo test --test ui` and review
//! the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
