//! `#[derive(KeyPart)]`: readable forms with field names, injective binary forms (variant tags),
//! `#[key_part(skip)]`, generics; and a derived type as a key parameter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::key::{binary, readable};
use cache_core::{cached, registry, KeyPart, MemoryBackend};

#[derive(KeyPart)]
struct Named {
    a: u32,
    b: String,
    #[key_part(skip)]
    #[allow(dead_code)]
    cache_hint: u64,
}

#[derive(KeyPart)]
struct Tuple(u8, &'static str);

#[derive(KeyPart)]
struct Unit;

#[derive(KeyPart)]
enum Shape {
    Dot,
    Circle { r: u32 },
    Rect(u32, u32),
    Named(Named),
}

#[derive(KeyPart)]
struct Wrapper<T> {
    inner: Option<T>,
}

#[test]
fn readable_forms_name_fields_and_variants() {
    let n = Named {
        a: 1,
        b: "x,y".into(),
        cache_hint: 99,
    };
    assert_eq!(readable(&n), r#"Named{a:1,b:"x,y"}"#);
    assert_eq!(readable(&Tuple(3, "q")), r#"Tuple(3,"q")"#);
    assert_eq!(readable(&Unit), "Unit");
    assert_eq!(readable(&Shape::Dot), "Dot");
    assert_eq!(readable(&Shape::Circle { r: 2 }), "Circle{r:2}");
    assert_eq!(readable(&Shape::Rect(1, 2)), "Rect(1,2)");
    assert_eq!(
        readable(&Wrapper { inner: Some(Unit) }),
        "Wrapper{inner:Some(Unit)}"
    );
}

#[test]
fn skipped_fields_do_not_change_the_key() {
    let a = Named {
        a: 1,
        b: "b".into(),
        cache_hint: 1,
    };
    let b = Named {
        a: 1,
        b: "b".into(),
        cache_hint: 2,
    };
    assert_eq!(binary(&a).as_bytes(), binary(&b).as_bytes());
}

#[test]
fn binary_forms_are_injective() {
    // same field bytes, different variants
    let values = [
        binary(&Shape::Dot),
        binary(&Shape::Circle { r: 0 }),
        binary(&Shape::Rect(0, 0)),
        binary(&Shape::Circle { r: 1 }),
        binary(&Shape::Rect(0, 1)),
        binary(&Shape::Rect(1, 0)),
        binary(&Shape::Named(Named {
            a: 0,
            b: String::new(),
            cache_hint: 0,
        })),
    ];
    for (i, x) in values.iter().enumerate() {
        for (j, y) in values.iter().enumerate() {
            if i != j {
                assert_ne!(x.as_bytes(), y.as_bytes(), "{i} vs {j}");
            }
        }
    }
    // separators inside strings cannot fake a field boundary
    let t1 = Tuple(1, "a\",2");
    assert_ne!(readable(&t1), readable(&Tuple(1, "a")));
}

static SHAPE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn area(shape: Shape) -> u32 {
    SHAPE_RUNS.fetch_add(1, Ordering::SeqCst);
    match shape {
        Shape::Dot => 0,
        Shape::Circle { r } => 3 * r * r,
        Shape::Rect(w, h) => w * h,
        Shape::Named(n) => n.a,
    }
}

#[test]
fn derived_types_as_key_parameters() {
    registry::with_backend_blocking(Arc::new(MemoryBackend::new()), || {
        assert_eq!(area(Shape::Rect(2, 3)), 6);
        assert_eq!(area(Shape::Rect(2, 3)), 6);
        assert_eq!(area(Shape::Rect(3, 2)), 6);
        assert_eq!(SHAPE_RUNS.load(Ordering::SeqCst), 2);
        assert_eq!(
            area_entry(Shape::Rect(2, 3)).key().text(),
            "macros_derive::area(Rect(2,3))"
        );
    });
}
