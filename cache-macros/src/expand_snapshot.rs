//! Snapshots of the expansion of a typical fn (`tests/expand/get_user.expanded.rs`) and of a
//! write-behind fn (`tests/expand/save_counter.expanded.rs`): they must stay short and name
//! runtime items only through `::cache_core::__private` (plus `::core`/`::std`).
//! After a deliberate change: `UPDATE_EXPAND=1 cargo test -p cache-macros --lib expand`.

use quote::quote;

const SNAPSHOT: &str = "tests/expand/get_user.expanded.rs";

fn pretty(ts: proc_macro2::TokenStream) -> String {
    prettyplease::unparse(&syn::parse2(ts).expect("the expansion parses as a file"))
}

#[test]
fn expansion_of_a_typical_fn() {
    let out = crate::cached::expand(
        quote!(ttl = "5m", depends_on = ["user:{id}"], skip(db)),
        quote! {
            /// Loads a user.
            pub async fn get_user(db: &Db, id: u64) -> Result<User, DbError> {
                db.load(id).await
            }
        },
    );
    check(SNAPSHOT, out, 40);
}

#[test]
fn expansion_of_a_write_behind_fn() {
    let out = crate::write_behind::expand(
        quote!(get_counter(id), value = count, flush_after = "500ms"),
        quote! {
            /// Saves a counter.
            pub async fn save_counter(id: u64, count: u64) -> Result<(), DbError> {
                db_write(id, count).await
            }
        },
    );
    check("tests/expand/save_counter.expanded.rs", out, 50);
}

/// Compares `out` with the snapshot at `snapshot`, checks that the first fn of the expansion
/// has at most `max_lines` lines and that absolute paths go through `__private`.
fn check(snapshot: &str, out: proc_macro2::TokenStream, max_lines: usize) {
    let text = pretty(out.clone());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(snapshot);
    if std::env::var_os("UPDATE_EXPAND").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text, expected,
        "the expansion changed; review it and run with UPDATE_EXPAND=1"
    );
    // the wrapped fn itself is short
    let main_fn_lines = text.split("\n}\n").next().map_or(0, |f| f.lines().count());
    assert!(main_fn_lines <= max_lines, "{main_fn_lines} lines");
    // every absolute path goes through `::cache_core::__private`, `::core` or `::std`
    let mut roots = Vec::new();
    absolute_roots(out, &mut roots);
    for root in roots {
        assert!(
            ["cache_core::__private", "core", "std"]
                .iter()
                .any(|ok| root.starts_with(ok)),
            "absolute path outside __private: ::{root}"
        );
    }
}

/// The first two segments of every path starting with `::`.
fn absolute_roots(ts: proc_macro2::TokenStream, out: &mut Vec<String>) {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = ts.into_iter().collect();
    for (i, t) in tokens.iter().enumerate() {
        if let TokenTree::Group(g) = t {
            absolute_roots(g.stream(), out);
            continue;
        }
        let is_colon =
            |t: Option<&TokenTree>| matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ':');
        if !(is_colon(Some(t)) && is_colon(tokens.get(i + 1))) {
            continue;
        }
        let prev = i.checked_sub(1).and_then(|j| tokens.get(j));
        let relative = match prev {
            Some(TokenTree::Ident(_)) => true,
            Some(TokenTree::Punct(p)) => p.as_char() == '>' || p.as_char() == ':',
            _ => false,
        };
        if !relative {
            let rest: Vec<String> = tokens[i + 2..]
                .iter()
                .take(4)
                .map(|t| t.to_string())
                .collect();
            out.push(rest.concat());
        }
    }
}
