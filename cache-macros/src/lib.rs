//! Procedural macros of `cache-core`: [`macro@cached`], [`macro@invalidates`],
//! [`macro@cache_put`] and [`derive@KeyPart`].
//!
//! Use them through `cache_core` (`use cache_core::{cached, invalidates, cache_put, KeyPart};`):
//! the generated code names runtime items only through `::cache_core::__private`.
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::ToTokens;

mod batch;
mod cached;
mod derive;
mod duration;
mod invalidates;
mod options;
mod signature;
mod template;
mod write_behind;

/// Caches a fn's results, keyed by its arguments.
///
/// ```
/// use cache_core::cached;
///
/// #[cached(ttl = "5m")]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// assert_eq!(square(7), 49); // runs the body
/// assert_eq!(square(7), 49); // from the cache
/// square_invalidate(7).unwrap(); // a companion: drop the entry of square(7)
/// ```
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `ttl = "5m"` | absolute expiration (`"30s"`, `"1h 30m"`, `"250ms"`; checked at compile time) |
/// | `sliding = "30s"` | sliding expiration: each hit extends the entry's life |
/// | `jitter = "5s"` | each entry's `ttl` is extended by a random 0..5 s (needs `ttl` or a `profile`) |
/// | `depends_on = ["user:{id}", "team:{user.team}"]` | dependencies of every entry: templates over key parameters (with field access), formatted with `Display`; `cache_core::invalidate_dependency("user:7")` drops the entries |
/// | `key = "user:{id}"` | a custom key (the text is the key, without the fn path); only the named parameters take part |
/// | `skip(db, conn)` | parameters left out of the key (`impl Trait` parameters and those whose type is not `KeyPart` must be skipped) |
/// | `include_self` | the receiver is part of the key (its type must implement `KeyPart`); the receiver's type name always is |
/// | `profile = "hot"` | a named profile of the registry (ttl, sliding, backend) |
/// | `cache_none = false` | for `Option<T>`: `None` is not cached |
/// | `lock = false` | no single flight: concurrent misses all run the body |
/// | `version = 2` | bumps the key namespace (old entries are no longer read) |
/// | `companions = false` | generate no companion items (required in trait impls) |
/// | `stale_while_revalidate = "30s"` | after `ttl`, for up to 30 s more, a call returns the stale value at once and one background refresh replaces it (needs `ttl`; owned `Clone + Send + Sync + 'static` arguments, no `self` receiver) |
/// | `stale_if_error = "1h"` | for a `Result` fn: an `Err` (or a `timeout`) returns a value at most 1 h past its `ttl`, as `Ok` |
/// | `timeout = "200ms"` | with a stale value at hand (needs `stale_if_error`), a slower body returns it and finishes in the background |
/// | `refresh_ahead = "10s"` | a call within the last 10 s of `ttl` is served and starts one background refresh (shorter than `ttl`) |
/// | `batch(ids)` | one entry per item of the collection parameter `ids` (`Vec<K>`, `&[K]`, `HashSet<K>`, `BTreeSet<K>`, `VecDeque<K>`); the fn returns a map `HashMap<K, V>` / `BTreeMap<K, V>` (optionally in a `Result`) and its body is called once with only the items that missed; `{ids}` in templates is the item; an item the body does not return is cached as absent unless `cache_none = false` |
///
/// Works on sync and async fns, free fns and methods (inherent and, with `companions = false`,
/// trait impls), generic fns (the type arguments are part of the key), with lifetimes, where
/// clauses, pattern parameters (the whole argument is the key part) and `_` parameters (never in
/// the key). Attributes, docs, visibility and the signature are kept.
///
/// Return types: `Result<T, E>` caches only `Ok(T)`; `Option<T>` caches `None` too unless
/// `cache_none = false`; any other type is cached as is. A reference or `impl Trait` return is a
/// compile error; the value type must be `Clone + Serialize + DeserializeOwned + Send + Sync +
/// 'static` (any backend may be installed at run time).
///
/// Every cached fn called while the body runs (hit or miss) becomes a dependency of the new
/// entry: invalidating it also drops this one.
///
/// # Companions
///
/// For `fn get_user(db: &Db, id: u64) -> Result<User, E>` with `skip(db)`, next to it (as
/// associated fns for a method), with the fn's visibility and generics:
///
/// | companion | what it does |
/// |---|---|
/// | `get_user_entry(id) -> EntryRef<User>` | the typed key of one entry: `key()`, `get`, `put`, `invalidate` (async and `_blocking` forms) |
/// | `get_user_invalidate(id)` | removes that entry (async for an async fn); `Result<(), CacheError>` |
/// | `get_user_invalidate_all()` | removes every entry of `get_user` |
/// | `get_user_cache() -> FnRef` | every entry: `stats()`, `invalidate_all[_blocking]()` |
/// | `get_user_refresh(db, id)` | recomputes, stores and returns the value |
/// | `get_user_uncached(db, id)` | the original body, without the cache |
///
/// Key companions take the key parameters (the ones not skipped), plus `&self` with
/// `include_self`. A method's companions are reached as `Self::find_entry(..)` or
/// `Repo::find_entry(..)`.
///
/// A **batch fn** (`batch(ids)`, items of type `K`, map values `V`) has per-item companions:
/// `get_users_entry(id: K) -> EntryRef<Option<V>>` (`None`: cached as absent),
/// `get_users_entries(ids: impl IntoIterator<Item = K>) -> EntryRefs<Option<V>>` (what
/// `#[invalidates(get_users([id]))]` uses) and `get_users_invalidate(ids: &[K])`.
///
/// ```
/// use std::collections::HashMap;
/// use cache_core::cached;
///
/// #[cached(batch(ids), depends_on = ["user:{ids}"])]
/// fn names(ids: Vec<u64>) -> HashMap<u64, String> {
///     ids.into_iter().map(|id| (id, format!("user {id}"))).collect()
/// }
///
/// assert_eq!(names(vec![1, 2]).len(), 2); // the body gets [1, 2]
/// assert_eq!(names(vec![1, 2, 3]).len(), 3); // the body gets [3]
/// names_invalidate(&[1]).unwrap();
/// assert_eq!(names_entry(2).get_blocking(), Some(Some("user 2".to_string())));
/// ```
///
/// In a **trait impl** no item can be added next to the method: write `companions = false`; the
/// cache then lives inside the method. Such a method is invalidated through its dependencies
/// (`depends_on`, or the entries it called), and `#[invalidates(Self::find(x))]` naming it is a
/// compile error (no `find_entry`).
///
/// ```
/// use cache_core::cached;
///
/// struct Repo;
/// impl Repo {
///     #[cached(depends_on = ["user:{id}"])]
///     async fn name(&self, id: u64) -> Result<String, std::io::Error> {
///         Ok(format!("user {id}"))
///     }
/// }
///
/// trait Source {
///     fn load(&self, id: u32) -> Option<String>;
/// }
/// impl Source for Repo {
///     #[cached(companions = false, cache_none = false)]
///     fn load(&self, id: u32) -> Option<String> {
///         (id > 0).then(|| id.to_string())
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(Repo.name(7).await.unwrap(), "user 7");
/// Repo::name_invalidate(7).await.unwrap();
/// cache_core::invalidate_dependency("user:7").await.unwrap();
/// assert_eq!(Repo.load(3).as_deref(), Some("3"));
/// # });
/// ```
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    cached::expand(attr.into(), item.into()).into()
}

/// Invalidates entries of cached fns after the fn returns (for a `Result`, only on `Ok`).
///
/// Targets: `get_user(id)` (one entry; the arguments are evaluated before the body runs, so clone
/// a non-`Copy` argument the body also uses), `team_page(..)` (every entry of `team_page`),
/// `Self::find(x)`, `crate::users::get_user(id)` (any path), `get_users([id, other])` (items of a
/// batch fn: an array argument), `dependencies = ["team:{team}"]` (templates over the
/// parameters). `before = true` invalidates before the body instead.
///
/// Each target expands to a call of the target's companion (`get_user_entry(id)`,
/// `team_page_cache()`), so a wrong name, arity or argument type is a compile error at the
/// offending token. Backend errors are logged, never returned.
///
/// ```
/// use cache_core::{cached, invalidates};
///
/// #[cached]
/// fn balance(account: u32) -> u64 { 100 }
///
/// #[invalidates(balance(account), dependencies = ["account:{account}"])]
/// fn deposit(account: u32, amount: u64) -> Result<(), String> {
///     Ok(())
/// }
///
/// assert_eq!(balance(1), 100);
/// deposit(1, 5).unwrap();
/// ```
#[proc_macro_attribute]
pub fn invalidates(attr: TokenStream, item: TokenStream) -> TokenStream {
    invalidates::expand(invalidates::Kind::Invalidates, attr.into(), item.into()).into()
}

/// Write-through: the fn's return value (the `Ok` value of a `Result`) becomes the cached entry
/// of the target call.
///
/// The value's type must be the target's value type (a compile error at the target otherwise).
/// The entry is replaced (entries depending on the old value are invalidated).
///
/// ```
/// use cache_core::{cached, cache_put};
///
/// #[cached]
/// fn user_name(id: u64) -> String { format!("user {id}") }
///
/// #[cache_put(user_name(id))]
/// fn rename(id: u64, name: &str) -> Result<String, String> {
///     Ok(name.to_string())
/// }
///
/// rename(7, "Ada").unwrap();
/// assert_eq!(user_name(7), "Ada");
/// ```
#[proc_macro_attribute]
pub fn cache_put(attr: TokenStream, item: TokenStream) -> TokenStream {
    invalidates::expand(invalidates::Kind::CachePut, attr.into(), item.into()).into()
}

/// Write-behind: stores `value` as the target's cache entry, queues the call, and returns at
/// once; the body runs later in the background flusher (`cache_core::write_behind`).
///
/// ```ignore
/// #[cached(ttl = "10m")]
/// async fn get_counter(id: u64) -> Result<u64, DbError> { db_read(id).await }
///
/// #[write_behind(get_counter(id), value = count, flush_after = "1s", max_attempts = 10, coalesce = true)]
/// async fn save_counter(id: u64, count: u64) -> Result<(), DbError> { db_write(id, count).await }
/// ```
///
/// Options: the target (a call of a free cached fn, with the key arguments), `value = <param>`
/// (required), `flush_after` (default `"1s"`: how long a write waits; writes of one key within it
/// coalesce), `max_attempts` (default 10, then the write is dead-lettered), `coalesce` (default
/// `true`: of several queued writes of one key only the newest runs). The fn is free (no
/// `self`), not generic, takes owned arguments (`Serialize + DeserializeOwned`), and returns
/// `()` or `Result<(), E>` with `E: Debug`. Its body is kept as `<fn>_now` (runs it without the
/// queue).
#[proc_macro_attribute]
pub fn write_behind(attr: TokenStream, item: TokenStream) -> TokenStream {
    write_behind::expand(attr.into(), item.into()).into()
}

/// Derives `KeyPart` for a struct or an enum, so it can be a key parameter.
///
/// Fields are written in order (named fields with their names in the readable key); enum
/// variants are tagged by their index. `#[key_part(skip)]` leaves a field out. Type parameters
/// must implement `KeyPart`.
///
/// ```
/// use cache_core::{key::readable, KeyPart};
///
/// #[derive(KeyPart)]
/// struct Query {
///     text: String,
///     page: u32,
///     #[key_part(skip)]
///     trace_id: u64,
/// }
///
/// #[derive(KeyPart)]
/// enum Sort { Newest, By(String) }
///
/// let q = Query { text: "rust".into(), page: 2, trace_id: 9 };
/// assert_eq!(readable(&q), r#"Query{text:"rust",page:2}"#);
/// assert_eq!(readable(&Sort::By("name".into())), r#"By("name")"#);
/// ```
#[proc_macro_derive(KeyPart, attributes(key_part))]
pub fn derive_key_part(input: TokenStream) -> TokenStream {
    derive::expand(input.into()).into()
}

/// Adds `e` to the errors reported together.
pub(crate) fn combine(err: &mut Option<syn::Error>, e: syn::Error) {
    match err {
        Some(prev) => prev.combine(e),
        None => *err = Some(e),
    }
}

/// The span of the first token of `t`.
pub(crate) fn first_span(t: &impl ToTokens) -> Span {
    t.to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// Parses the annotated item as a fn with a body, or says what `#[name]` goes on.
pub(crate) fn parse_fn(item: proc_macro2::TokenStream, name: &str) -> syn::Result<syn::ItemFn> {
    if let Ok(f) = syn::parse2::<syn::ItemFn>(item.clone()) {
        return Ok(f);
    }
    let msg = format!("`#[{name}]` goes on a fn with a body");
    let span = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => s.struct_token.span,
        Ok(syn::Item::Enum(e)) => e.enum_token.span,
        Ok(syn::Item::Impl(i)) => i.impl_token.span,
        Ok(syn::Item::Mod(m)) => m.mod_token.span,
        Ok(syn::Item::Const(c)) => c.const_token.span,
        Ok(syn::Item::Static(s)) => s.static_token.span,
        Ok(syn::Item::Trait(t)) => t.trait_token.span,
        Ok(syn::Item::Type(t)) => t.type_token.span,
        _ => first_span(&item),
    };
    Err(syn::Error::new(span, msg))
}

#[cfg(test)]
mod expand_snapshot;
