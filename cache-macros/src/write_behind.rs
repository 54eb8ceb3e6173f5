//! `#[write_behind(get_counter(id), value = counter)]`: the annotated fn stores `value` as the
//! target's entry, queues its own call, and returns; its body (kept as `<fn>_now`) runs later in
//! the write-behind flusher, which finds it through a [`Writer`] registered at startup.
//!
//! [`Writer`]: https://docs.rs/cache-core (cache_core::write_behind::Writer)

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, FnArg, Ident, ItemFn, Lit, ReturnType, Token, Type};

use crate::combine;

struct Parsed {
    /// `get_counter_entry(id)`.
    entry: Expr,
    /// `get_counter_cache`.
    all: syn::Path,
    /// The parameter holding the value.
    value: Ident,
    flush_after_ns: u64,
    max_attempts: u32,
    coalesce: bool,
}

/// What the fn returns: `()` or `Result<(), E>`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Returns {
    Unit,
    Result,
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match crate::parse_fn(item.clone(), "write_behind") {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#e #item);
        }
    };
    match parse(attr, &func) {
        Ok((parsed, returns)) => generate(&func, parsed, returns),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #func)
        }
    }
}

fn returns(output: &ReturnType) -> syn::Result<Returns> {
    const MSG: &str = "a `#[write_behind]` fn returns `()` or `Result<(), E>`: its caller gets `Ok(())` once the write is queued";
    let ty = match output {
        ReturnType::Default => return Ok(Returns::Unit),
        ReturnType::Type(_, ty) => ty,
    };
    match &**ty {
        Type::Tuple(t) if t.elems.is_empty() => return Ok(Returns::Unit),
        Type::Path(p) => {
            if let Some(last) = p.path.segments.last() {
                if last.ident == "Result" {
                    if let syn::PathArguments::AngleBracketed(a) = &last.arguments {
                        if let Some(syn::GenericArgument::Type(Type::Tuple(t))) = a.args.first() {
                            if t.elems.is_empty() && a.args.len() == 2 {
                                return Ok(Returns::Result);
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Err(syn::Error::new_spanned(ty, MSG))
}

fn parse(attr: TokenStream, func: &ItemFn) -> syn::Result<(Parsed, Returns)> {
    let exprs = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(attr)?;
    let mut err: Option<syn::Error> = None;
    let sig = &func.sig;
    if let Some(r) = sig.receiver() {
        combine(
            &mut err,
            syn::Error::new_spanned(r, "`#[write_behind]` goes on a free fn: a queued write is run later, maybe by another process, without `self`"),
        );
    }
    if !sig.generics.params.is_empty() {
        combine(
            &mut err,
            syn::Error::new_spanned(&sig.generics, "a `#[write_behind]` fn cannot be generic: its queued writes are decoded into its parameter types"),
        );
    }
    let mut names = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(pt) = arg else { continue };
        match (&*pt.pat, &*pt.ty) {
            (_, Type::Reference(r)) => combine(
                &mut err,
                syn::Error::new_spanned(r, "a `#[write_behind]` fn takes owned arguments: they are queued (serialized) and used after the call returns"),
            ),
            (syn::Pat::Ident(pi), _) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                names.push(pi.ident.clone())
            }
            (other, _) => combine(
                &mut err,
                syn::Error::new_spanned(other, "a `#[write_behind]` fn takes plain `name: Type` parameters"),
            ),
        }
    }
    let returns = match returns(&sig.output) {
        Ok(r) => Some(r),
        Err(e) => {
            combine(&mut err, e);
            None
        }
    };
    let mut target: Option<(Expr, syn::Path)> = None;
    let mut value: Option<Ident> = None;
    let mut flush_after_ns = 1_000_000_000u64;
    let mut max_attempts = 10u32;
    let mut coalesce = true;
    for expr in exprs {
        match expr {
            Expr::Assign(a) => {
                let option = match &*a.left {
                    Expr::Path(p) => p.path.get_ident().map(Ident::to_string),
                    _ => None,
                };
                let right = &*a.right;
                match option.as_deref() {
                    Some("value") => match right {
                        Expr::Path(p) if p.path.get_ident().is_some_and(|i| names.contains(i)) => {
                            value = p.path.get_ident().cloned();
                        }
                        other => combine(
                            &mut err,
                            syn::Error::new_spanned(other, "`value` names the parameter holding the value to cache, e.g. `value = counter`"),
                        ),
                    },
                    Some("flush_after") => match right {
                        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                            match crate::duration::parse_nanos(&s.value()) {
                                Ok(n) if n > 0 => flush_after_ns = n,
                                Ok(_) => combine(&mut err, syn::Error::new_spanned(s, "`flush_after` must be more than zero")),
                                Err(e) => combine(&mut err, syn::Error::new_spanned(s, e)),
                            }
                        }
                        other => combine(&mut err, syn::Error::new_spanned(other, "`flush_after` takes a duration string, e.g. `\"1s\"`")),
                    },
                    Some("max_attempts") => match right {
                        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => match i.base10_parse::<u32>() {
                            Ok(n) if n > 0 => max_attempts = n,
                            _ => combine(&mut err, syn::Error::new_spanned(i, "`max_attempts` is a whole number of at least 1")),
                        },
                        other => combine(&mut err, syn::Error::new_spanned(other, "`max_attempts` is a whole number of at least 1")),
                    },
                    Some("coalesce") => match right {
                        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => coalesce = b.value,
                        other => combine(&mut err, syn::Error::new_spanned(other, "`coalesce` takes `true` or `false`")),
                    },
                    _ => combine(
                        &mut err,
                        syn::Error::new_spanned(&a.left, "unknown option; `#[write_behind]` takes the target (`get_counter(id)`), `value = <param>`, `flush_after = \"1s\"`, `max_attempts = 10` and `coalesce = true`"),
                    ),
                }
            }
            Expr::Call(mut call) if target.is_none() => {
                let bad = call
                    .args
                    .iter()
                    .any(|a| matches!(a, Expr::Range(_) | Expr::Array(_)));
                let Expr::Path(path) = &mut *call.func else {
                    combine(
                        &mut err,
                        syn::Error::new_spanned(
                            &call.func,
                            "expected a call of a cached fn: `get_counter(id)`",
                        ),
                    );
                    continue;
                };
                if bad {
                    combine(&mut err, syn::Error::new_spanned(&call.args, "`#[write_behind]` writes one entry: pass the key arguments, e.g. `get_counter(id)`"));
                    continue;
                }
                if path
                    .path
                    .segments
                    .first()
                    .is_some_and(|s| s.ident == "Self")
                {
                    combine(&mut err, syn::Error::new_spanned(&path.path, "the target of `#[write_behind]` is a free cached fn (`get_counter(id)`, `crate::counters::get(id)`)"));
                    continue;
                }
                let mut all = path.path.clone();
                if let (Some(last), Some(last_all)) =
                    (path.path.segments.last_mut(), all.segments.last_mut())
                {
                    last_all.ident =
                        format_ident!("{}_cache", last.ident, span = last.ident.span());
                    last.ident = format_ident!("{}_entry", last.ident, span = last.ident.span());
                }
                target = Some((Expr::Call(call), all));
            }
            other => combine(
                &mut err,
                syn::Error::new_spanned(
                    other,
                    "expected the target, a call of a cached fn: `get_counter(id)`",
                ),
            ),
        }
    }
    if target.is_none() {
        combine(&mut err, syn::Error::new(Span::call_site(), "`#[write_behind]` needs its target, e.g. `#[write_behind(get_counter(id), value = counter)]`"));
    }
    if value.is_none() && err.is_none() {
        combine(&mut err, syn::Error::new(Span::call_site(), "`#[write_behind]` needs `value = <param>`: the parameter holding the value the target caches"));
    }
    if let Some(e) = err {
        return Err(e);
    }
    let (entry, all) = target.expect("checked above");
    Ok((
        Parsed {
            entry,
            all,
            value: value.expect("checked above"),
            flush_after_ns,
            max_attempts,
            coalesce,
        },
        returns.expect("checked above"),
    ))
}

fn generate(func: &ItemFn, parsed: Parsed, returns: Returns) -> TokenStream {
    let p = quote!(::cache_core::__private);
    let sig = &func.sig;
    let name = &sig.ident;
    let now = format_ident!("{}_now", name);
    let is_async = sig.asyncness.is_some();
    let params: Vec<(&syn::Pat, &Type)> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(pt) => Some((&*pt.pat, &*pt.ty)),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let idents: Vec<Ident> = params
        .iter()
        .map(|(pat, _)| match pat {
            syn::Pat::Ident(pi) => pi.ident.clone(),
            _ => unreachable!("checked in parse"),
        })
        .collect();
    let types: Vec<&Type> = params.iter().map(|(_, t)| *t).collect();
    let entry = &parsed.entry;
    let all = &parsed.all;
    let value = &parsed.value;
    let flush = parsed.flush_after_ns;
    let attempts = parsed.max_attempts;
    let coalesce = parsed.coalesce;
    let name_str = name.to_string();
    let aw = is_async.then(|| quote!(.await));
    let call_now = quote!(#now(#(#idents),*)#aw);
    let run = if is_async {
        quote!(#p::run_write)
    } else {
        quote!(#p::run_write_blocking)
    };
    let queue = if is_async {
        quote!(#p::queue_write_async)
    } else {
        quote!(#p::queue_write_blocking)
    };
    let value_ref = quote_spanned!(value.span()=> &#value);
    let done = match returns {
        Returns::Result => quote!(return ::core::result::Result::Ok(());),
        Returns::Unit => quote!(return;),
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    let block = &func.block;
    let mut now_sig = sig.clone();
    now_sig.ident = now.clone();
    let doc_now = format!("Runs [`{name}`]'s write now, without the write-behind queue (generated by `#[write_behind]`; the flusher calls it).");
    quote! {
        #(#attrs)*
        #vis #sig {
            fn __cache_core_run(__a: ::std::vec::Vec<u8>) -> #p::BoxFuture<'static, ::core::result::Result<(), ::std::string::String>> {
                #run(__a, |(#(#idents,)*): (#(#types,)*)| #now(#(#idents),*))
            }
            #[allow(unused_variables)]
            fn __cache_core_evict(__a: ::std::vec::Vec<u8>) -> #p::BoxFuture<'static, ()> {
                #p::evict_write(__a, |(#(#idents,)*): (#(#types,)*)| #entry)
            }
            fn __cache_core_target() -> #p::FnRef {
                #all()
            }
            const __CACHE_CORE_WRITER: #p::Writer = #p::Writer {
                name: ::core::concat!(::core::module_path!(), "::", #name_str),
                run: __cache_core_run,
                evict: __cache_core_evict,
                target: __cache_core_target,
                flush_after: #p::Duration::from_nanos(#flush),
                max_attempts: #attempts,
                coalesce: #coalesce,
            };
            #p::inventory::submit!(__CACHE_CORE_WRITER);
            let __cache_core_entry = #entry;
            if #queue(&__CACHE_CORE_WRITER, &__cache_core_entry, #value_ref, &(#(&#idents,)*))#aw {
                #done
            }
            #call_now
        }

        #[doc = #doc_now]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis #now_sig #block
    }
}
