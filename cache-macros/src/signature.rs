//! What the macros need to know about a fn's signature: its parameters (which take part in the
//! key), whether it is a method, and what its return type caches.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::visit::Visit;
use syn::{FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature, Type};

use crate::combine;

/// One typed parameter (the receiver is handled apart).
pub(crate) struct Param {
    /// The name generated code uses: the parameter's own name, or `__cache_core_argN` for a
    /// pattern parameter.
    pub ident: Ident,
    pub ty: Type,
    /// The original pattern.
    pub pat: Pat,
    /// Names bound by the pattern (the name itself for a plain parameter).
    pub bound: Vec<Ident>,
    /// A plain `name: Type` (possibly `mut`).
    pub plain: bool,
    /// `_: Type`: never used by the body, so never part of the key.
    pub wildcard: bool,
    /// The type is or contains `impl Trait`.
    pub impl_trait: bool,
}

/// The parameters of a signature.
pub(crate) fn params(sig: &Signature) -> Vec<Param> {
    let mut out = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = arg else { continue };
        let mut bound = Vec::new();
        collect_bindings(&pt.pat, &mut bound);
        let (ident, plain, wildcard) = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                (pi.ident.clone(), true, false)
            }
            Pat::Wild(w) => (
                format_ident!("__cache_core_arg{}", i, span = w.underscore_token.span),
                false,
                true,
            ),
            other => (
                Ident::new(&format!("__cache_core_arg{i}"), span_of(other)),
                false,
                false,
            ),
        };
        let mut finder = ImplTraitFinder(false);
        finder.visit_type(&pt.ty);
        out.push(Param {
            ident,
            ty: (*pt.ty).clone(),
            pat: (*pt.pat).clone(),
            bound,
            plain,
            wildcard,
            impl_trait: finder.0,
        });
    }
    out
}

fn span_of(t: &impl ToTokens) -> Span {
    t.to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

fn collect_bindings(pat: &Pat, out: &mut Vec<Ident>) {
    struct V<'a>(&'a mut Vec<Ident>);
    impl<'ast> Visit<'ast> for V<'_> {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            self.0.push(p.ident.clone());
            syn::visit::visit_pat_ident(self, p);
        }
    }
    V(out).visit_pat(pat);
}

struct ImplTraitFinder(bool);
impl<'ast> Visit<'ast> for ImplTraitFinder {
    fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
        self.0 = true;
    }
}

/// True when the signature mentions `Self` or has a receiver: the fn is an associated fn and
/// generated code reaches its companions through `Self::`.
pub(crate) fn is_method(sig: &Signature) -> bool {
    if sig.receiver().is_some() {
        return true;
    }
    fn has_self(ts: TokenStream) -> bool {
        ts.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "Self",
            proc_macro2::TokenTree::Group(g) => has_self(g.stream()),
            _ => false,
        })
    }
    has_self(sig.inputs.to_token_stream())
        || has_self(sig.output.to_token_stream())
        || has_self(sig.generics.to_token_stream())
}

/// How the return type is cached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetKind {
    /// `Result<T, E>`: the `Ok` value is cached.
    Result,
    /// `Option<T>`; `None` is cached when the flag is true.
    Option(bool),
    /// Anything else: the whole value.
    Plain,
}

/// The return type's kind and the cached value type.
pub(crate) struct Ret {
    pub kind: RetKind,
    pub value: TokenStream,
}

/// The last path segment's name and its type arguments, for `Result<..>` / `Option<..>`.
pub(crate) fn outer_generic(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(tp) = ty else { return None };
    if tp.qself.is_some() {
        return None;
    }
    let seg = tp.path.segments.last()?;
    let PathArguments::AngleBracketed(ab) = &seg.arguments else {
        return None;
    };
    let tys = ab
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    Some((seg.ident.to_string(), tys))
}

/// True when the return type is a `Result` (what `#[invalidates]`/`#[cache_put]` check for `Ok`).
pub(crate) fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => {
            matches!(outer_generic(ty), Some((name, tys)) if name == "Result" && !tys.is_empty())
        }
        ReturnType::Default => false,
    }
}

/// Checks the return type and finds the cached value type.
pub(crate) fn ret(output: &ReturnType, cache_none: Option<(bool, Span)>) -> syn::Result<Ret> {
    let ty = match output {
        ReturnType::Default => {
            if let Some((_, span)) = cache_none {
                return Err(syn::Error::new(
                    span,
                    "`cache_none` applies to fns returning `Option<T>`",
                ));
            }
            return Ok(Ret {
                kind: RetKind::Plain,
                value: quote!(()),
            });
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    struct Uncacheable(Option<syn::Error>);
    impl<'ast> Visit<'ast> for Uncacheable {
        fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
            combine(
                &mut self.0,
                syn::Error::new_spanned(
                    r,
                    "a cached fn cannot return a reference: the cache hands out owned values; return an owned type (e.g. `String`, `Arc<T>`)",
                ),
            );
        }
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            combine(
                &mut self.0,
                syn::Error::new_spanned(
                    t,
                    "a cached fn cannot return `impl Trait`: the cache stores a concrete type; name the type",
                ),
            );
        }
        fn visit_type_bare_fn(&mut self, t: &'ast syn::TypeBareFn) {
            combine(
                &mut self.0,
                syn::Error::new_spanned(t, "a cached fn cannot return a fn pointer"),
            );
        }
    }
    let mut check = Uncacheable(None);
    check.visit_type(ty);
    if let Some(e) = check.0 {
        return Err(e);
    }
    let (kind, value) = match outer_generic(ty) {
        Some((name, tys)) if name == "Result" && !tys.is_empty() => {
            (RetKind::Result, tys[0].to_token_stream())
        }
        Some((name, tys)) if name == "Option" && tys.len() == 1 => {
            if cache_none.is_some_and(|(c, _)| !c) {
                (RetKind::Option(false), tys[0].to_token_stream())
            } else {
                (RetKind::Option(true), ty.to_token_stream())
            }
        }
        _ => (RetKind::Plain, ty.to_token_stream()),
    };
    if let (Some((_, span)), false) = (cache_none, matches!(kind, RetKind::Option(_))) {
        return Err(syn::Error::new(
            span,
            "`cache_none` applies to fns returning `Option<T>`",
        ));
    }
    Ok(Ret { kind, value })
}

/// Type and const parameter names (what a turbofish passes on).
pub(crate) fn generic_args(generics: &syn::Generics) -> Vec<Ident> {
    generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.clone()),
            syn::GenericParam::Const(c) => Some(c.ident.clone()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect()
}

/// Type parameter names (their `type_name` is part of the key).
pub(crate) fn type_params(generics: &syn::Generics) -> Vec<Ident> {
    generics.type_params().map(|t| t.ident.clone()).collect()
}
