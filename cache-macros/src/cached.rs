//! `#[cached(...)]`: the wrapped fn and its companions.
//!
//! For `fn get_user(db: &Db, id: u64) -> Result<User, E>` with `skip(db)` the expansion is:
//!
//! * `get_user`: looks the call up through a `static FnCache` (held by a hidden accessor fn,
//!   `__cache_core_get_user`) and, on a miss, runs `get_user_uncached` and stores its value;
//! * the companions `get_user_entry(id)`, `get_user_invalidate(id)`, `get_user_invalidate_all()`,
//!   `get_user_cache()`, `get_user_refresh(db, id)`, `get_user_uncached(db, id)` (the original
//!   body).
//!
//! With `companions = false` (required in trait impls, where no item can be added) the static
//! lives inside the fn and the body stays inline.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{FnArg, Ident, ItemFn, Pat};

use crate::batch::BatchPlan;
use crate::combine;
use crate::options::CachedOptions;
use crate::signature::{self, Param, Ret, RetKind};
use crate::template::Template;

/// Expands `#[cached(attr)] item`; on error, the errors and the item unchanged (so the rest of
/// the crate still type-checks and the user sees only the real problem).
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match crate::parse_fn(item.clone(), "cached") {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#e #item);
        }
    };
    match expand_fn(attr, &func) {
        Ok(ts) => ts,
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #func)
        }
    }
}

/// Everything the generated code needs, checked.
struct Plan<'a> {
    func: &'a ItemFn,
    opts: CachedOptions,
    params: Vec<Param>,
    /// Indices of the key parameters in `params`.
    key: Vec<usize>,
    ret: Ret,
    method: bool,
    depends_on: Vec<Template>,
    key_template: Option<Template>,
    /// `batch(ids)`: one entry per item of that parameter.
    batch: Option<BatchPlan>,
}

fn plan(attr: TokenStream, func: &ItemFn) -> syn::Result<Plan<'_>> {
    let mut err: Option<syn::Error> = None;
    let (opts, opts_err) = CachedOptions::parse(attr);
    if let Some(e) = opts_err {
        combine(&mut err, e);
    }
    let sig = &func.sig;
    let params = signature::params(sig);
    let receiver = sig.receiver();
    // names a template may use: plain parameters, names bound by patterns, `self`
    let mut names: Vec<String> = params
        .iter()
        .flat_map(|p| p.bound.iter().map(Ident::to_string))
        .collect();
    if receiver.is_some() {
        names.push("self".into());
    }
    for s in &opts.skip {
        if !params.iter().any(|p| p.bound.contains(s)) {
            let hint = if *s == "self" {
                "; the receiver is never part of the key unless `include_self` is given".to_string()
            } else {
                format!(
                    "; the parameters are {}",
                    list(params.iter().flat_map(|p| p.bound.iter()))
                )
            };
            combine(
                &mut err,
                syn::Error::new(s.span(), format!("`skip({s})` names no parameter{hint}")),
            );
        }
    }
    if let Some(c) = &sig.constness {
        combine(
            &mut err,
            syn::Error::new(
                c.span,
                "a cached fn cannot be `const`: the cache is a run-time lookup",
            ),
        );
    }
    if let (Some(tok), None) = (&opts.include_self, receiver) {
        combine(
            &mut err,
            syn::Error::new(
                tok.span(),
                "`include_self` needs a method with a `self` receiver",
            ),
        );
    }
    // a batch fn's return is checked once its parameters are known
    let ret = match (&opts.batch, signature::ret(&sig.output, opts.cache_none)) {
        (Some(_), _) => None,
        (None, Ok(r)) => Some(r),
        (None, Err(e)) => {
            combine(&mut err, e);
            None
        }
    };
    let key_template = match &opts.key {
        Some(lit) => match Template::parse(lit, &names) {
            Ok(t) => Some(t),
            Err(e) => {
                combine(&mut err, e);
                None
            }
        },
        None => None,
    };
    // the key parameters
    let mut key = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let skipped = p.wildcard || opts.skip.iter().any(|s| p.bound.contains(s));
        let in_key = match &key_template {
            Some(t) => t.roots().iter().any(|r| p.bound.iter().any(|b| b == r)),
            None => !skipped,
        };
        if !in_key {
            continue;
        }
        if key_template.is_some() && skipped {
            combine(
                &mut err,
                syn::Error::new(
                    p.ident.span(),
                    format!("`{}` is skipped but the `key` template uses it", p.ident),
                ),
            );
        }
        if key_template.is_none() && p.impl_trait {
            combine(
                &mut err,
                syn::Error::new_spanned(
                    &p.ty,
                    format!(
                        "an `impl Trait` parameter cannot be part of the cache key; add `{}` to `skip(...)`",
                        p.bound.first().map_or_else(|| "it".to_string(), Ident::to_string)
                    ),
                ),
            );
        }
        if key_template.is_some() && !p.plain {
            combine(
                &mut err,
                syn::Error::new_spanned(
                    &p.pat,
                    "a `key` template can only use plain parameters (`name: Type`), not names bound by a pattern",
                ),
            );
        }
        key.push(i);
    }
    let mut depends_on = Vec::new();
    for lit in &opts.depends_on {
        match Template::parse(lit, &names) {
            Ok(t) => {
                for root in t.roots() {
                    let is_key = if root == "self" {
                        opts.include_self.is_some()
                    } else {
                        key.iter()
                            .any(|&i| params[i].plain && params[i].ident == root)
                    };
                    if !is_key {
                        let why = if root == "self" {
                            "the receiver is not part of the key; add `include_self`".to_string()
                        } else {
                            format!("`{root}` is not a key parameter (skipped, or bound by a pattern); a dependency must follow from the key")
                        };
                        combine(
                            &mut err,
                            syn::Error::new(
                                lit.span(),
                                format!("`depends_on` uses `{root}`: {why}"),
                            ),
                        );
                    }
                }
                depends_on.push(t);
            }
            Err(e) => combine(&mut err, e),
        }
    }
    let mut batch = None;
    let mut ret = ret;
    if let Some(name) = &opts.batch {
        match crate::batch::plan(name, &params, &key, &sig.output) {
            Ok(b) => {
                let v = &b.value;
                ret = Some(Ret {
                    kind: RetKind::Plain,
                    value: quote!(::core::option::Option<#v>),
                });
                batch = Some(b);
            }
            Err(e) => combine(&mut err, e),
        }
        if !opts.companions {
            combine(
                &mut err,
                syn::Error::new(
                    name.span(),
                    "`batch` needs the companions: it cannot be combined with `companions = false`",
                ),
            );
        }
    }
    check_resilience(&opts, &params, sig, ret.as_ref(), &mut err);
    if let (Some(span), Some(_)) = (opts.local, &opts.batch) {
        combine(
            &mut err,
            syn::Error::new(span, "`local` is not supported on `batch` fns yet"),
        );
    }
    if let Some(w) = &opts.weight {
        if opts.batch.is_some() || !sig.generics.params.is_empty() {
            combine(
                &mut err,
                syn::Error::new_spanned(
                    w,
                    "`weight` is not supported on `batch` or generic fns yet (their weight is measured from the value)",
                ),
            );
        }
    }
    match (err, ret) {
        (Some(e), _) => Err(e),
        (None, None) => unreachable!("an invalid return type is an error"),
        (None, Some(ret)) => Ok(Plan {
            batch,
            method: signature::is_method(sig),
            func,
            opts,
            params,
            key,
            ret,
            depends_on,
            key_template,
        }),
    }
}

/// What the resilience options need of the signature: `stale_if_error` stands in for an `Err`;
/// a body that may run in the background (after the call returned) owns its inputs.
fn check_resilience(
    opts: &CachedOptions,
    params: &[Param],
    sig: &syn::Signature,
    ret: Option<&Ret>,
    err: &mut Option<syn::Error>,
) {
    if let (Some((_, span)), Some(r)) = (opts.stale_if_error, ret) {
        if r.kind != RetKind::Result {
            combine(
                err,
                syn::Error::new(
                    span,
                    "`stale_if_error` returns the stale value in place of an `Err`: the fn must return `Result<T, E>`",
                ),
            );
        }
    }
    let Some((name, span)) = opts.background() else {
        if opts.resilient() && opts.batch.is_some() {
            combine(
                err,
                syn::Error::new(
                    span_of_batch(opts),
                    "`batch` fns do not take `stale_if_error` yet",
                ),
            );
        }
        return;
    };
    if let Some(b) = &opts.batch {
        combine(
            err,
            syn::Error::new(b.span(), format!("`batch` fns do not take `{name}` yet")),
        );
    }
    if !opts.companions {
        combine(
            err,
            syn::Error::new(
                span,
                format!("`{name}` refreshes in the background through a companion fn: it cannot be combined with `companions = false`"),
            ),
        );
    }
    if let Some(r) = sig.receiver() {
        combine(
            err,
            syn::Error::new_spanned(
                r,
                format!("`{name}` runs the body in the background, after the call returned: a method with a `self` receiver cannot; make it an associated fn taking owned arguments"),
            ),
        );
    }
    for p in params {
        if matches!(p.ty, syn::Type::Reference(_)) {
            combine(
                err,
                syn::Error::new_spanned(
                    &p.ty,
                    format!("`{name}` runs the body in the background, after the call returned: parameter `{}` cannot be a reference; take an owned, cloneable value (e.g. an `Arc<..>` or a pool handle)", p.ident),
                ),
            );
        }
    }
}

fn span_of_batch(opts: &CachedOptions) -> Span {
    opts.batch
        .as_ref()
        .map_or_else(Span::call_site, Ident::span)
}

fn list<'a>(names: impl Iterator<Item = &'a Ident>) -> String {
    let v: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn p() -> TokenStream {
    quote!(::cache_core::__private)
}

impl Plan<'_> {
    fn name(&self) -> &Ident {
        &self.func.sig.ident
    }

    fn companion(&self, suffix: &str) -> Ident {
        format_ident!("{}_{}", self.name(), suffix)
    }

    /// `Self::` for associated fns.
    fn prefix(&self) -> TokenStream {
        if self.method {
            quote!(Self::)
        } else {
            quote!()
        }
    }

    /// `__cache_core_call_<name>`: the fn's call logic, with the mode as its last parameter.
    fn call_name(&self) -> Ident {
        format_ident!("__cache_core_call_{}", self.name())
    }

    fn accessor(&self) -> Ident {
        format_ident!("__cache_core_{}", self.name())
    }

    /// The expression of the `&'static FnCache`.
    fn cache(&self) -> TokenStream {
        if self.opts.companions {
            let prefix = self.prefix();
            let acc = self.accessor();
            quote!(#prefix #acc())
        } else {
            quote!(__CACHE_CORE_FN)
        }
    }

    /// The type entries hold: the value type, or `Local<value>` for a `local` fn.
    fn stored(&self) -> TokenStream {
        let value = &self.ret.value;
        if self.opts.local.is_some() {
            let p = p();
            quote!(#p::Local<#value>)
        } else {
            quote!(#value)
        }
    }

    fn static_item(&self, name: &Ident) -> TokenStream {
        let p = p();
        let o = &self.opts;
        let fn_name = self.name().to_string();
        let version = o.version;
        let dur = |d: Option<u64>| match d {
            Some(n) => quote!(::core::option::Option::Some(#p::Duration::from_nanos(#n))),
            None => quote!(::core::option::Option::None),
        };
        let ttl = dur(o.ttl);
        let sliding = dur(o.sliding);
        let jitter = dur(o.jitter.map(|(n, _)| n));
        let profile = match &o.profile {
            Some(l) => quote!(::core::option::Option::Some(#l)),
            None => quote!(::core::option::Option::None),
        };
        let cache_none = match (&self.batch, self.opts.cache_none) {
            (Some(_), Some((c, _))) => c,
            (Some(_), None) => true,
            (None, _) => !matches!(self.ret.kind, RetKind::Option(false)),
        };
        let lock = o.lock;
        let custom_key = self.key_template.is_some();
        let res = |d: Option<(u64, Span)>| dur(d.map(|(n, _)| n));
        let (swr, sie, timeout, ahead) = (
            res(o.stale_while_revalidate),
            res(o.stale_if_error),
            res(o.timeout),
            res(o.refresh_ahead),
        );
        let weight = match &o.weight {
            Some(path) => {
                let stored = self.stored();
                let inner = if o.local.is_some() {
                    quote!(&v.0)
                } else {
                    quote!(v)
                };
                quote!(::core::option::Option::Some({
                    fn __cache_core_weight(v: &dyn ::core::any::Any) -> usize {
                        // a closure, so `fn(&str)` serves a `String` value (deref coercion)
                        #[allow(clippy::redundant_closure)]
                        v.downcast_ref::<#stored>().map_or(0, |v| #path(#inner))
                    }
                    __cache_core_weight
                }))
            }
            None => quote!(::core::option::Option::None),
        };
        let local = o.local.is_some();
        quote! {
            static #name: #p::FnCache = #p::FnCache::new(#p::FnMeta {
                module: #p::module_path!(),
                name: #fn_name,
                version: #version,
                ttl: #ttl,
                sliding: #sliding,
                jitter: #jitter,
                profile: #profile,
                cache_none: #cache_none,
                lock: #lock,
                custom_key: #custom_key,
                resilience: #p::Resilience {
                    stale_while_revalidate: #swr,
                    stale_if_error: #sie,
                    timeout: #timeout,
                    refresh_ahead: #ahead,
                },
                weight: #weight,
                local: #local,
            });
        }
    }

    /// `CallInfo { self_type, generics }`.
    fn info(&self, with_generics: bool) -> TokenStream {
        let p = p();
        let self_type = if self.method {
            quote!(::core::option::Option::Some(#p::type_name::<Self>()))
        } else {
            quote!(::core::option::Option::None)
        };
        let generics = if with_generics {
            signature::type_params(&self.func.sig.generics)
        } else {
            Vec::new()
        };
        if !self.method && generics.is_empty() {
            return quote!(#p::CallInfo::default());
        }
        quote!(#p::CallInfo { self_type: #self_type, generics: &[#(#p::type_name::<#generics>()),*] })
    }

    /// The key argument: a closure writing each key parameter, or the custom key.
    fn key_expr(&self) -> TokenStream {
        let p = p();
        if let Some(t) = &self.key_template {
            let text = t.format_expr();
            return quote!(&#p::RawKey(#text));
        }
        let mut writes = Vec::new();
        if let Some(tok) = &self.opts.include_self {
            let this = Ident::new("self", tok.span());
            writes.push(quote_spanned!(tok.span()=> __k.arg(&#this);));
        }
        // const generic arguments are values: they are written first, like arguments
        for c in self.func.sig.generics.const_params() {
            let id = &c.ident;
            writes.push(quote_spanned!(id.span()=> __k.arg(&#id);));
        }
        for &i in &self.key {
            let id = &self.params[i].ident;
            writes.push(quote_spanned!(id.span()=> __k.arg(&#id);));
        }
        quote!(&#p::args(|__k| { #(#writes)* }))
    }

    /// The dependency closure.
    fn deps_expr(&self) -> TokenStream {
        if self.depends_on.is_empty() {
            return quote!(&mut |_| {});
        }
        let pushes = self.depends_on.iter().map(|t| {
            let f = t.format_expr();
            quote!(__d.push(#f);)
        });
        quote!(&mut |__d: &mut ::std::vec::Vec<::std::string::String>| { #(#pushes)* })
    }

    /// The begin / fill logic of a call in `mode` (an expression of type `Mode`); `body` is
    /// the body future (async) or closure (sync).
    fn logic(
        &self,
        mode: TokenStream,
        body: TokenStream,
        cache_stmt: TokenStream,
        refresher: Option<TokenStream>,
    ) -> TokenStream {
        let p = p();
        let cache = self.cache();
        let value = self.stored();
        let local = self.opts.local.is_some();
        let key = self.key_expr();
        let info = self.info(true);
        let deps = self.deps_expr();
        let asyncness = self.func.sig.asyncness.is_some();
        let (begin, mut fill, aw) = if asyncness {
            (quote!(begin_async), quote!(fill_async), quote!(.await))
        } else {
            (quote!(begin_blocking), quote!(fill_blocking), quote!())
        };
        // stale_if_error / timeout (the fn's, or its profile's stale_if_error): the fill of a
        // `Result` fn may return the stale value (`Ok(v)`) in place of an `Err`
        let mut guard = quote!();
        if self.ret.kind == RetKind::Result {
            let kind = if self.opts.timeout.is_some() {
                "timed"
            } else {
                "guarded"
            };
            fill = format_ident!("{}_{}", fill.to_string(), kind).into_token_stream();
            guard = if local {
                quote!(, |__r| ::core::result::Result::is_err(__r), |__v: #value| ::core::result::Result::Ok(__v.0))
            } else {
                quote!(, |__r| ::core::result::Result::is_err(__r), ::core::result::Result::Ok)
            };
        }
        let (begin, refresher) = match refresher {
            Some(r) => (
                format_ident!("{}_bg", begin.to_string()).into_token_stream(),
                quote!(, #r),
            ),
            None => (begin, quote!()),
        };
        // a `local` fn's entries hold `Local<V>`: unwrapped on a hit, wrapped to store
        let v = if local { quote!(__v.0) } else { quote!(__v) };
        let wrap = local.then(|| quote!(.map(#p::Local)));
        let (hit, to_value) = match self.ret.kind {
            RetKind::Result => (
                quote!(::core::result::Result::Ok(#v)),
                quote!(|__r| __r.as_ref().ok().cloned() #wrap),
            ),
            RetKind::Option(false) => (
                quote!(::core::option::Option::Some(#v)),
                quote!(|__r| ::core::clone::Clone::clone(__r) #wrap),
            ),
            _ => (
                quote!(#v),
                quote!(|__r| ::core::option::Option::Some(::core::clone::Clone::clone(__r)) #wrap),
            ),
        };
        let value_span = match &self.func.sig.output {
            syn::ReturnType::Type(_, t) => crate::first_span(t),
            syn::ReturnType::Default => self.name().span(),
        };
        let begin_call = quote_spanned!(value_span=> #cache.#begin::<_, #value>);
        quote! {
            #cache_stmt
            let __cache_core_begin = #begin_call(#key, #info, #deps, #mode #refresher)#aw;
            match __cache_core_begin {
                #p::Begin::Hit(__v) => #hit,
                #p::Begin::Fill(__f) => __f.#fill(#body, #to_value #guard)#aw,
            }
        }
    }

    /// `__cache_core_revalidate_<name>`: the fn in `Revalidate` mode (what a background refresh
    /// calls).
    fn revalidate_name(&self) -> Ident {
        format_ident!("__cache_core_revalidate_{}", self.name())
    }

    /// For a fn with `stale_while_revalidate`, `refresh_ahead` or `timeout`: the closure that
    /// starts one background refresh (it clones every argument and calls the revalidating fn).
    fn refresher(&self) -> Option<TokenStream> {
        self.opts.background()?;
        let p = p();
        let params: Vec<&Ident> = self.params.iter().map(|p| &p.ident).collect();
        let has_impl_trait = self.params.iter().any(|p| p.impl_trait);
        let f = self.turbofish(&self.revalidate_name(), !has_impl_trait);
        let clones = quote!(#(let #params = ::core::clone::Clone::clone(&#params);)*);
        Some(if self.func.sig.asyncness.is_some() {
            quote!(&|| {
                #clones
                #p::refresh_task(async move {
                    let _ = #f(#(#params),*).await;
                })
            })
        } else {
            quote!(&|| {
                #clones
                #p::refresh_job(move || {
                    let _ = #f(#(#params),*);
                })
            })
        })
    }

    /// The call of a batch fn with `mode`: every item looked up at once, then `body` (a
    /// closure taking the missing items) computes the rest.
    fn batch_logic(&self, b: &BatchPlan, mode: &str, body: TokenStream) -> TokenStream {
        let p = p();
        let cache = self.cache();
        let (item, value) = (&b.item, &b.value);
        let ident = &self.params[b.param].ident;
        let key = self.key_expr();
        let info = self.info(true);
        let pushes = self.depends_on.iter().map(|t| {
            let f = t.format_expr();
            quote!(__d.push(#f);)
        });
        let mode = Ident::new(mode, Span::call_site());
        let (begin, fill, aw) = if self.func.sig.asyncness.is_some() {
            (
                quote!(batch_begin_async),
                quote!(fill_async),
                quote!(.await),
            )
        } else {
            (
                quote!(batch_begin_blocking),
                quote!(fill_blocking),
                quote!(),
            )
        };
        let value_span = crate::first_span(value);
        let begin_call = quote_spanned!(value_span=> #cache.#begin::<#item, #value>);
        let ret = b.returned(quote!(__cache_core_r));
        quote! {
            let __cache_core_info = #info;
            let __cache_core_items: ::std::vec::Vec<#item> =
                ::core::iter::Iterator::collect(::core::iter::Iterator::cloned(#ident.iter()));
            let __cache_core_fill = #begin_call(
                __cache_core_items,
                &#p::Items {
                    key: &|#ident: &#item| #cache.key(#key, &__cache_core_info),
                    deps: &|#ident: &#item, __d: &mut ::std::vec::Vec<::std::string::String>| {
                        let _ = &#ident;
                        #(#pushes)*
                    },
                    info: __cache_core_info,
                },
                #p::Mode::#mode,
            )#aw;
            let __cache_core_r = __cache_core_fill.#fill(#body)#aw;
            #ret
        }
    }

    /// The body of a batch fn's call: `_uncached` with the missing items in place of the
    /// collection.
    fn batch_body(&self, b: &BatchPlan, uncached: &Ident, explicit: bool) -> TokenStream {
        let item = &b.item;
        let (conv, arg) = b.pass_missing();
        let f = self.turbofish(uncached, explicit);
        let recv = self.func.sig.receiver().map(|_| quote!(self,));
        let args = self.params.iter().enumerate().map(|(i, prm)| {
            if i == b.param {
                arg.clone()
            } else {
                prm.ident.to_token_stream()
            }
        });
        let mut call = quote!(#f(#recv #(#args),*));
        if self.func.sig.unsafety.is_some() {
            call = quote!(unsafe { #call });
        }
        if self.func.sig.asyncness.is_some() {
            let pairs = b.to_pairs(quote!(#call.await));
            quote!(move |__cache_core_missing: ::std::vec::Vec<#item>| async move { #conv #pairs })
        } else {
            let pairs = b.to_pairs(call);
            quote!(move |__cache_core_missing: ::std::vec::Vec<#item>| { #conv #pairs })
        }
    }

    /// Inputs with pattern parameters renamed and `mut` dropped (the fn only passes them on).
    fn forwarding_inputs(&self, keep_mut: bool) -> Vec<FnArg> {
        let mut i = 0;
        self.func
            .sig
            .inputs
            .iter()
            .map(|arg| match arg {
                FnArg::Receiver(r) => {
                    let mut r = r.clone();
                    if !keep_mut {
                        r.mutability = None;
                    }
                    FnArg::Receiver(r)
                }
                FnArg::Typed(pt) => {
                    let param = &self.params[i];
                    i += 1;
                    let mut pt = pt.clone();
                    let keep = keep_mut && param.plain;
                    if !keep {
                        pt.pat = Box::new(Pat::Ident(syn::PatIdent {
                            attrs: Vec::new(),
                            by_ref: None,
                            mutability: None,
                            ident: param.ident.clone(),
                            subpat: None,
                        }));
                    }
                    FnArg::Typed(pt)
                }
            })
            .collect()
    }

    /// `name::<T, U>` (no turbofish when `impl Trait` parameters forbid it).
    fn turbofish(&self, name: &Ident, explicit: bool) -> TokenStream {
        let prefix = self.prefix();
        let g = signature::generic_args(&self.func.sig.generics);
        if g.is_empty() || !explicit {
            quote!(#prefix #name)
        } else {
            quote!(#prefix #name::<#(#g),*>)
        }
    }

    /// Arguments forwarded to `name_uncached`.
    fn forward_args(&self) -> TokenStream {
        let recv = self.func.sig.receiver().map(|_| quote!(self,));
        let args = self.params.iter().map(|p| &p.ident);
        quote!(#recv #(#args),*)
    }

    /// Lint attributes and `cfg`s copied onto companions.
    fn copied_attrs(&self) -> Vec<&syn::Attribute> {
        self.func
            .attrs
            .iter()
            .filter(|a| {
                ["cfg", "allow", "expect", "warn", "deny"]
                    .iter()
                    .any(|n| a.path().is_ident(n))
            })
            .collect()
    }
}

fn expand_fn(attr: TokenStream, func: &ItemFn) -> syn::Result<TokenStream> {
    let plan = plan(attr, func)?;
    Ok(if plan.opts.companions {
        with_companions(&plan)
    } else {
        inline(&plan)
    })
}

/// `companions = false`: the static and the body stay inside the fn.
fn inline(plan: &Plan<'_>) -> TokenStream {
    let p = p();
    let func = plan.func;
    let mut sig = func.sig.clone();
    sig.inputs = plan.forwarding_inputs(true).into_iter().collect();
    // pattern parameters are rebound inside the body
    let rebinds = plan.params.iter().filter(|p| !p.plain).map(|p| {
        let pat = &p.pat;
        let id = &p.ident;
        quote!(let #pat = #id;)
    });
    let block = &func.block;
    let body = if func.sig.asyncness.is_some() {
        quote!(async move { #(#rebinds)* #block })
    } else {
        quote!(|| { #(#rebinds)* #block })
    };
    let static_item = plan.static_item(&Ident::new("__CACHE_CORE_FN", Span::call_site()));
    let logic = plan.logic(quote!(#p::Mode::Normal), body, static_item, None);
    let attrs = &func.attrs;
    let vis = &func.vis;
    quote! {
        #(#attrs)*
        #vis #sig {
            #logic
        }
    }
}

fn with_companions(plan: &Plan<'_>) -> TokenStream {
    let p = p();
    let func = plan.func;
    let sig = &func.sig;
    let name = plan.name();
    let vis = &func.vis;
    let attrs = &func.attrs;
    let copied = plan.copied_attrs();
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let asyncness = &sig.asyncness;
    let aw = asyncness.map(|_| quote!(.await));
    let value = &plan.stored();
    let has_impl_trait = plan.params.iter().any(|p| p.impl_trait);
    let doc_name = if plan.method {
        format!("Self::{name}")
    } else {
        name.to_string()
    };

    let uncached = plan.companion("uncached");
    let refresh = plan.companion("refresh");
    let entry = plan.companion("entry");
    let invalidate = plan.companion("invalidate");
    let invalidate_all = plan.companion("invalidate_all");
    let cache_fn = plan.companion("cache");
    let accessor = plan.accessor();

    // the wrapped fn and `_refresh`: forward to `_uncached`
    let forwarding: Vec<FnArg> = plan.forwarding_inputs(false);
    let call_uncached = {
        let f = plan.turbofish(&uncached, !has_impl_trait);
        let args = plan.forward_args();
        let call = if sig.unsafety.is_some() {
            // the caller of the wrapped fn upheld its contract
            quote!(unsafe { #f(#args) })
        } else {
            quote!(#f(#args))
        };
        if asyncness.is_some() {
            call
        } else if plan.opts.timeout.is_some() {
            // the body may outlive the call (it finishes on its own thread): it owns its inputs
            quote!(move || #call)
        } else {
            quote!(|| #call)
        }
    };
    let mut main_sig = sig.clone();
    main_sig.inputs = forwarding.iter().cloned().collect();
    let (main_logic, refresh_logic) = match &plan.batch {
        Some(b) => {
            let body = plan.batch_body(b, &uncached, !has_impl_trait);
            (
                plan.batch_logic(b, "Normal", body.clone()),
                plan.batch_logic(b, "Refresh", body),
            )
        }
        None => {
            // one copy of the call logic, in `Normal` mode for the fn and `Refresh` mode for
            // `_refresh`: the generic runtime is instantiated once per fn, not twice
            let call = plan.turbofish(&plan.call_name(), !has_impl_trait);
            let mut args: Vec<TokenStream> = Vec::new();
            if sig.receiver().is_some() {
                args.push(quote!(self));
            }
            args.extend(plan.params.iter().map(|p| p.ident.to_token_stream()));
            let with_mode = |mode: TokenStream| {
                let call = quote!(#call(#(#args,)* #p::Mode::#mode));
                if sig.unsafety.is_some() {
                    quote!(unsafe { #call }#aw)
                } else {
                    quote!(#call #aw)
                }
            };
            (with_mode(quote!(Normal)), with_mode(quote!(Refresh)))
        }
    };
    // the call logic of a fn that is not a batch: `mode` is its last parameter
    let call_fn = plan.batch.is_none().then(|| {
        let mut sig = main_sig.clone();
        sig.ident = plan.call_name();
        sig.inputs
            .push(syn::parse_quote!(__cache_core_mode: #p::Mode));
        let logic = plan.logic(
            quote!(__cache_core_mode),
            call_uncached.clone(),
            quote!(),
            plan.refresher(),
        );
        quote! {
            #[doc(hidden)]
            #[inline]
            #(#copied)*
            #[allow(dead_code, clippy::too_many_arguments)]
            #sig {
                #logic
            }
        }
    });
    // a background refresh calls the fn again in `Revalidate` mode
    let revalidate_fn = plan.opts.background().map(|_| {
        let mut sig = main_sig.clone();
        sig.ident = plan.revalidate_name();
        let logic = plan.logic(
            quote!(#p::Mode::Revalidate),
            call_uncached.clone(),
            quote!(),
            None,
        );
        quote! {
            #[doc(hidden)]
            #(#copied)*
            #[allow(dead_code, clippy::too_many_arguments)]
            #vis #sig {
                #logic
            }
        }
    });
    let mut refresh_sig = main_sig.clone();
    refresh_sig.ident = refresh.clone();
    let mut uncached_sig = sig.clone();
    uncached_sig.ident = uncached.clone();
    let block = &func.block;

    // companions taking the key parameters
    let self_param = plan.opts.include_self.as_ref().map(|_| quote!(&self,));
    let self_arg = plan.opts.include_self.as_ref().map(|_| quote!(self,));
    let key_params: Vec<TokenStream> = plan
        .key
        .iter()
        .map(|&i| {
            let prm = &plan.params[i];
            let id = &prm.ident;
            match &plan.batch {
                Some(b) if b.param == i => {
                    let item = &b.item;
                    quote!(#id: #item)
                }
                _ => {
                    let ty = &prm.ty;
                    quote!(#id: #ty)
                }
            }
        })
        .collect();
    let key_args: Vec<&Ident> = plan.key.iter().map(|&i| &plan.params[i].ident).collect();
    let entry_call = plan.turbofish(&entry, true);
    let cache_call = plan.turbofish(&cache_fn, false);
    let key_expr = plan.key_expr();
    let info = plan.info(true);
    let info_all = plan.info(false);
    let deps = plan.deps_expr();
    let cache = plan.cache();
    let (inv, inv_all) = if asyncness.is_some() {
        (quote!(invalidate), quote!(invalidate_all))
    } else {
        (quote!(invalidate_blocking), quote!(invalidate_all_blocking))
    };
    let static_item = plan.static_item(&Ident::new("CACHE", Span::call_site()));

    let doc_uncached = format!("Runs [`{doc_name}`] without the cache (generated by `#[cached]`).");
    let doc_refresh = format!(
        "Recomputes [`{doc_name}`] for these arguments, replaces the cached entry and returns the result (generated by `#[cached]`)."
    );
    let doc_entry = format!(
        "The cache entry of [`{doc_name}`] for these key arguments: its key, `get`, `put`, `invalidate` (generated by `#[cached]`)."
    );
    let doc_invalidate = format!(
        "Removes the cached entry of [`{doc_name}`] for these key arguments, and the entries that depend on it (generated by `#[cached]`)."
    );
    let doc_invalidate_all = format!(
        "Removes every cached entry of [`{doc_name}`], and the entries that depend on them (generated by `#[cached]`)."
    );
    let doc_cache = format!(
        "Every entry of [`{doc_name}`]: its stats, `invalidate_all` (generated by `#[cached]`)."
    );
    let allow = quote!(#[allow(dead_code, clippy::extra_unused_type_parameters, clippy::extra_unused_lifetimes, clippy::too_many_arguments)]);
    let invalidate_items = match &plan.batch {
        None => quote! {
            #[doc = #doc_invalidate]
            #(#copied)* #allow
            #vis #asyncness fn #invalidate #generics (#self_param #(#key_params),*) -> ::core::result::Result<(), #p::CacheError> #where_clause {
                #entry_call(#self_arg #(#key_args),*).#inv()#aw
            }
        },
        Some(b) => {
            // `_entries(.., ids: impl IntoIterator<Item = K>)` and `_invalidate(.., ids: &[K])`
            let item = &b.item;
            let ident = &plan.params[b.param].ident;
            let entries = plan.companion("entries");
            let params_with = |ty: TokenStream| -> Vec<TokenStream> {
                plan.key
                    .iter()
                    .zip(&key_params)
                    .map(|(&i, kp)| {
                        if i == b.param {
                            quote!(#ident: #ty)
                        } else {
                            kp.clone()
                        }
                    })
                    .collect()
            };
            let many = params_with(quote!(impl ::core::iter::IntoIterator<Item = #item>));
            let slice = params_with(quote!(&[#item]));
            let doc_entries = format!(
                "The cache entries of [`{doc_name}`] for these items: `invalidate` them all (generated by `#[cached]`; what `#[invalidates({name}([id]))]` uses)."
            );
            let doc_invalidate = format!(
                "Removes the cached entries of [`{doc_name}`] for these items, and the entries that depend on them (generated by `#[cached]`)."
            );
            let collect = quote! {
                #p::EntryRefs::new(::core::iter::Iterator::collect(::core::iter::Iterator::map(
                    ::core::iter::IntoIterator::into_iter(#ident),
                    |#ident: #item| #cache.entry::<#value>(#key_expr, #info, #deps),
                )))
            };
            quote! {
                #[doc = #doc_entries]
                #(#copied)* #allow
                #vis fn #entries #generics (#self_param #(#many),*) -> #p::EntryRefs<#value> #where_clause {
                    #collect
                }

                #[doc = #doc_invalidate]
                #(#copied)* #allow
                #vis #asyncness fn #invalidate #generics (#self_param #(#slice),*) -> ::core::result::Result<(), #p::CacheError> #where_clause {
                    let #ident = ::core::iter::Iterator::cloned(#ident.iter());
                    #collect.#inv()#aw
                }
            }
        }
    };
    quote! {
        #(#attrs)*
        #vis #main_sig {
            #main_logic
        }

        #[doc(hidden)]
        #[inline]
        #(#copied)*
        fn #accessor() -> &'static #p::FnCache {
            #static_item
            &CACHE
        }

        #call_fn

        #[doc = #doc_uncached]
        #(#copied)* #allow
        #vis #uncached_sig #block

        #[doc = #doc_refresh]
        #(#copied)* #allow
        #vis #refresh_sig {
            #refresh_logic
        }

        #[doc = #doc_entry]
        #(#copied)* #allow
        #vis fn #entry #generics (#self_param #(#key_params),*) -> #p::EntryRef<#value> #where_clause {
            #cache.entry::<#value>(#key_expr, #info, #deps)
        }

        #invalidate_items

        #revalidate_fn

        #[doc = #doc_cache]
        #(#copied)* #allow
        #vis fn #cache_fn() -> #p::FnRef {
            #cache.all(#info_all)
        }

        #[doc = #doc_invalidate_all]
        #(#copied)* #allow
        #vis #asyncness fn #invalidate_all() -> ::core::result::Result<(), #p::CacheError> {
            #cache_call().#inv_all()#aw
        }
    }
}
