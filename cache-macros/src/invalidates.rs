//! `#[invalidates(...)]` and `#[cache_put(...)]`: calls of the companions of cached fns, around
//! the body of the annotated fn.
//!
//! `get_user(id)` becomes `get_user_entry(id)` (the target's typed key, built before the body
//! runs, from the arguments as they were passed), `team_page(..)` becomes `team_page_cache()`,
//! and a call with an array argument, `get_users([id])`, names items of a batch fn:
//! `get_users_entries([id])`.
//! The user's tokens are kept with their spans, so a wrong name, arity or type is a compile error
//! at the offending token.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, ItemFn, Lit, Token};

use crate::combine;
use crate::signature;
use crate::template::{lit_str_array, Template};

/// Which attribute is expanding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Invalidates,
    CachePut,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Invalidates => "invalidates",
            Kind::CachePut => "cache_put",
        }
    }
}

enum Target {
    /// `f(a, b)` rewritten to `f_entry(a, b)`.
    Entry(Expr),
    /// `g(..)` rewritten to `g_cache()`.
    All(Expr),
}

struct Parsed {
    targets: Vec<(Target, Span)>,
    dependencies: Vec<Template>,
    before: bool,
}

pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match crate::parse_fn(item.clone(), kind.name()) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#e #item);
        }
    };
    match parse(kind, attr, &func) {
        Ok(parsed) => generate(kind, &func, parsed),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #func)
        }
    }
}

fn parse(kind: Kind, attr: TokenStream, func: &ItemFn) -> syn::Result<Parsed> {
    let exprs = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(attr)?;
    let mut names: Vec<String> = signature::params(&func.sig)
        .iter()
        .flat_map(|p| p.bound.iter().map(Ident::to_string))
        .collect();
    if func.sig.receiver().is_some() {
        names.push("self".into());
    }
    let mut out = Parsed {
        targets: Vec::new(),
        dependencies: Vec::new(),
        before: false,
    };
    let mut err: Option<syn::Error> = None;
    if exprs.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            format!(
                "`#[{}]` needs at least one target, e.g. `#[{}(get_user(id))]`",
                kind.name(),
                kind.name()
            ),
        ));
    }
    for expr in exprs {
        match expr {
            Expr::Assign(a) if kind == Kind::Invalidates => {
                let option = match &*a.left {
                    Expr::Path(p) => p.path.get_ident().map(Ident::to_string),
                    _ => None,
                };
                match option.as_deref() {
                    Some("dependencies") => match lit_str_array(&a.right, "dependencies") {
                        Ok(lits) => {
                            for lit in lits {
                                match Template::parse(&lit, &names) {
                                    Ok(t) => out.dependencies.push(t),
                                    Err(e) => combine(&mut err, e),
                                }
                            }
                        }
                        Err(e) => combine(&mut err, e),
                    },
                    Some("before") => match &*a.right {
                        Expr::Lit(ExprLit {
                            lit: Lit::Bool(b), ..
                        }) => out.before = b.value,
                        other => combine(
                            &mut err,
                            syn::Error::new_spanned(other, "`before` takes `true` or `false`"),
                        ),
                    },
                    _ => combine(
                        &mut err,
                        syn::Error::new_spanned(
                            &a.left,
                            "unknown option; `#[invalidates]` takes cached fn calls (`get_user(id)`, `team_page(..)`), `dependencies = [\"...\"]` and `before = true`",
                        ),
                    ),
                }
            }
            other => match target(kind, other) {
                Ok(t) => out.targets.push(t),
                Err(e) => combine(&mut err, e),
            },
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn target(kind: Kind, expr: Expr) -> syn::Result<(Target, Span)> {
    let span = crate::first_span(&expr);
    let usage = match kind {
        Kind::Invalidates => {
            "expected a call of a cached fn: `get_user(id)`, `team_page(..)` (all its entries), `Self::find(x)`, `crate::users::get_user(id)`"
        }
        Kind::CachePut => "expected a call of a cached fn: `get_user(id)`, `Self::find(x)`",
    };
    match expr {
        Expr::Call(mut call) => {
            let all = call.args.len() == 1
                && matches!(&call.args[0], Expr::Range(r) if r.start.is_none() && r.end.is_none());
            if all && kind == Kind::CachePut {
                return Err(syn::Error::new_spanned(
                    &call.args,
                    "`#[cache_put]` writes one entry: pass the key arguments, e.g. `get_user(id)`",
                ));
            }
            let Expr::Path(path) = &mut *call.func else {
                return Err(syn::Error::new_spanned(&call.func, usage));
            };
            let Some(last) = path.path.segments.last_mut() else {
                return Err(syn::Error::new_spanned(&call.func, usage));
            };
            let items = call.args.iter().any(|a| matches!(a, Expr::Array(_)));
            if items && kind == Kind::CachePut {
                return Err(syn::Error::new_spanned(
                    &call.args,
                    "`#[cache_put]` writes one entry: pass one item, e.g. `get_users(id)`",
                ));
            }
            let suffix = match (all, items) {
                (true, _) => "cache",
                (false, true) => "entries",
                (false, false) => "entry",
            };
            last.ident = format_ident!("{}_{}", last.ident, suffix, span = last.ident.span());
            if all {
                call.args = Punctuated::new();
                Ok((Target::All(Expr::Call(call)), span))
            } else {
                Ok((Target::Entry(Expr::Call(call)), span))
            }
        }
        Expr::MethodCall(mut call) => {
            // `self.find([x, y])`: the items of a batch fn
            let suffix = if call.args.iter().any(|a| matches!(a, Expr::Array(_))) {
                "entries"
            } else {
                "entry"
            };
            call.method = format_ident!("{}_{}", call.method, suffix, span = call.method.span());
            Ok((Target::Entry(Expr::MethodCall(call)), span))
        }
        other => Err(syn::Error::new_spanned(other, usage)),
    }
}

fn generate(kind: Kind, func: &ItemFn, parsed: Parsed) -> TokenStream {
    let p = quote!(::cache_core::__private);
    let is_async = func.sig.asyncness.is_some();
    let aw = is_async.then(|| quote!(.await));
    let is_result = signature::returns_result(&func.sig.output);
    let mut prepare = Vec::new();
    let mut apply = Vec::new();
    for (i, (t, span)) in parsed.targets.iter().enumerate() {
        let var = format_ident!("__cache_core_target{}", i);
        match t {
            Target::Entry(call) => {
                prepare.push(quote!(let #var = #call;));
                let stmt = match kind {
                    Kind::Invalidates => {
                        let m = if is_async {
                            quote!(invalidate)
                        } else {
                            quote!(invalidate_blocking)
                        };
                        quote_spanned!(*span=> let _ = #var.#m()#aw;)
                    }
                    Kind::CachePut => {
                        let m = if is_async {
                            quote!(put)
                        } else {
                            quote!(put_blocking)
                        };
                        // method-call `clone` so a mismatch reads "expected `User`, found `u64`"
                        let value = if is_result {
                            quote_spanned!(*span=> __cache_core_ok.clone())
                        } else {
                            quote_spanned!(*span=> __cache_core_ret.clone())
                        };
                        quote_spanned!(*span=> #[allow(clippy::clone_on_copy)] let _ = #var.#m(#value)#aw;)
                    }
                };
                apply.push(stmt);
            }
            Target::All(call) => {
                prepare.push(quote!(let #var = #call;));
                let m = if is_async {
                    quote!(invalidate_all)
                } else {
                    quote!(invalidate_all_blocking)
                };
                apply.push(quote_spanned!(*span=> let _ = #var.#m()#aw;));
            }
        }
    }
    for (i, t) in parsed.dependencies.iter().enumerate() {
        let var = format_ident!("__cache_core_dependency{}", i);
        let f = t.format_expr();
        prepare.push(quote!(let #var: ::std::string::String = #f;));
        if is_async {
            apply.push(quote!(#p::invalidate_dependency(#var).await;));
        } else {
            apply.push(quote!(#p::invalidate_dependency_blocking(#var);));
        }
    }
    let block = &func.block;
    let run = if is_async {
        quote!(let __cache_core_ret = async move #block.await;)
    } else {
        quote!(
            #[allow(clippy::redundant_closure_call)]
            let __cache_core_ret = (|| #block)();
        )
    };
    let body = if parsed.before {
        quote! {
            #(#prepare)*
            #(#apply)*
            #run
            __cache_core_ret
        }
    } else if is_result {
        let bind = if kind == Kind::CachePut {
            quote!(::core::result::Result::Ok(__cache_core_ok))
        } else {
            quote!(::core::result::Result::Ok(_))
        };
        quote! {
            #(#prepare)*
            #run
            if let #bind = &__cache_core_ret {
                #(#apply)*
            }
            __cache_core_ret
        }
    } else {
        quote! {
            #(#prepare)*
            #run
            #(#apply)*
            __cache_core_ret
        }
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}
