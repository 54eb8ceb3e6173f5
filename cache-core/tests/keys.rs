//! Key encoding is injective: two different argument lists never share a key, whatever
//! separators, quotes and escapes the arguments hold (property tests over random arguments).

use cache_core::key::{binary, readable, shorten, KeyPart};
use proptest::prelude::*;

/// Strings made mostly of the characters an encoding could trip on.
fn tricky_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(','),
            Just('('),
            Just(')'),
            Just('"'),
            Just('\\'),
            Just('['),
            Just(']'),
            Just('\''),
            Just(':'),
            Just('\n'),
            Just('\u{0}'),
            Just('a'),
            Just('é'),
            any::<char>()
        ],
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

type Args = (
    String,
    Vec<String>,
    Option<String>,
    (i64, f64),
    Vec<Option<char>>,
);

fn args() -> impl Strategy<Value = Args> {
    (
        tricky_string(),
        proptest::collection::vec(tricky_string(), 0..4),
        proptest::option::of(tricky_string()),
        (any::<i64>(), any::<f64>()),
        proptest::collection::vec(proptest::option::of(any::<char>()), 0..3),
    )
}

/// Equality as the key sees it: all NaNs are one value, -0.0 and 0.0 are two.
fn same(a: &Args, b: &Args) -> bool {
    let f = |x: f64, y: f64| (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits();
    a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 .0 == b.3 .0 && f(a.3 .1, b.3 .1) && a.4 == b.4
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn different_arguments_never_share_a_key(a in args(), b in args()) {
        let equal = same(&a, &b);
        prop_assert_eq!(readable(&a) == readable(&b), equal, "readable: {} vs {}", readable(&a), readable(&b));
        prop_assert_eq!(binary(&a).as_bytes() == binary(&b).as_bytes(), equal);
    }

    #[test]
    fn a_string_split_differently_is_another_key(s in tricky_string(), cut in 0usize..8) {
        let chars: Vec<char> = s.chars().collect();
        let cut = cut.min(chars.len());
        let left: String = chars[..cut].iter().collect();
        let right: String = chars[cut..].iter().collect();
        prop_assert_ne!(readable(&(s.clone(),)), readable(&(left.clone(), right.clone())));
        prop_assert_ne!(readable(&vec![s.clone()]), readable(&vec![left.clone(), right.clone()]));
        let (one, two) = (binary(&vec![s]), binary(&vec![left, right]));
        prop_assert_ne!(one.as_bytes(), two.as_bytes());
    }

    #[test]
    fn shortened_keys_stay_distinct(a in "[a-z,\"]{200,400}", b in "[a-z,\"]{200,400}") {
        prop_assume!(a != b);
        prop_assert_ne!(shorten(&a, 120), shorten(&b, 120));
        prop_assert!(shorten(&a, 120).len() <= 120);
    }
}

#[test]
fn keys_are_stable_across_builds() {
    // Pinned encodings: a change here breaks every key already stored in Redis.
    assert_eq!(
        readable(&(42u64, "a,b", Some(-1i8))),
        r#"(42,"a,b",Some(-1))"#
    );
    assert_eq!(
        binary(&(1u16, "x")).as_bytes(),
        &[1, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x']
    );
    let _ = <str as KeyPart>::write_readable;
}
