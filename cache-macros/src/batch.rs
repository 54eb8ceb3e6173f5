//! `#[cached(batch(ids))]`: what a batch fn's signature must look like, checked, and how the
//! missing items are handed to its body.
//!
//! The batch parameter is a collection (`Vec<K>`, `VecDeque<K>`, `HashSet<K>`, `BTreeSet<K>`,
//! `&[K]`, or a reference to one of those); the return is a map keyed by the item type
//! (`HashMap<K, V>`, `BTreeMap<K, V>`), optionally in a `Result`. Each item has its own entry
//! holding an `Option<V>` (`None`: the body did not return the item).

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{Ident, ReturnType, Type};

use crate::signature::{outer_generic, Param};

/// Collections a batch parameter may be (by the last path segment).
const COLLECTIONS: &[&str] = &["Vec", "VecDeque", "HashSet", "BTreeSet", "IndexSet"];
/// Maps a batch fn may return.
const MAPS: &[&str] = &["HashMap", "BTreeMap", "IndexMap"];

/// How the body receives the missing items (a `Vec<K>` at run time).
pub(crate) enum Pass {
    /// An owned collection: `FromIterator`.
    Owned,
    /// `&[K]`: a slice of the vector.
    Slice,
    /// `&C`: a reference to a collection built with `FromIterator`.
    Ref(Box<Type>),
}

/// A checked batch fn.
pub(crate) struct BatchPlan {
    /// Index of the batch parameter.
    pub param: usize,
    /// The item type `K`.
    pub item: Type,
    /// The map's value type `V`.
    pub value: Type,
    /// The fn returns `Result<Map, E>`.
    pub result: bool,
    pub pass: Pass,
}

/// Checks `batch(name)` against the parameters and the return type.
pub(crate) fn plan(
    name: &Ident,
    params: &[Param],
    key: &[usize],
    output: &ReturnType,
) -> syn::Result<BatchPlan> {
    let Some(param) = params.iter().position(|p| p.plain && p.ident == *name) else {
        let names: Vec<String> = params
            .iter()
            .filter(|p| p.plain)
            .map(|p| format!("`{}`", p.ident))
            .collect();
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`batch({name})` names no parameter; the parameters are {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    if !key.contains(&param) {
        return Err(syn::Error::new(
            name.span(),
            format!("`{name}` is the batch parameter: its items are part of each entry's key, so it cannot be skipped"),
        ));
    }
    let ty = &params[param].ty;
    let Some((item, pass)) = item_type(ty) else {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "the batch parameter `{name}` must be a collection of items: `Vec<K>`, `&[K]`, `HashSet<K>`, `BTreeSet<K>` or `VecDeque<K>`, not `{}`",
                ty.to_token_stream().to_string().replace(' ', "")
            ),
        ));
    };
    let expected = format!(
        "a batch fn returns a map from its item type to the values: `HashMap<{item}, V>` or `BTreeMap<{item}, V>`, optionally in a `Result`",
        item = item.to_token_stream().to_string().replace(' ', "")
    );
    let ReturnType::Type(_, ret) = output else {
        return Err(syn::Error::new(Span::call_site(), expected));
    };
    let (result, map) = match outer_generic(ret) {
        Some((n, tys)) if n == "Result" && !tys.is_empty() => (true, tys[0]),
        _ => (false, &**ret),
    };
    let (key_ty, value) = match outer_generic(map) {
        Some((n, tys)) if MAPS.contains(&n.as_str()) && tys.len() >= 2 => (tys[0], tys[1]),
        _ => return Err(syn::Error::new_spanned(map, expected)),
    };
    if same(key_ty, &item) {
        Ok(BatchPlan {
            param,
            item,
            value: value.clone(),
            result,
            pass,
        })
    } else {
        Err(syn::Error::new_spanned(
            key_ty,
            format!(
                "the map is keyed by `{}` but the items of `{name}` are `{}`; {expected}",
                key_ty.to_token_stream().to_string().replace(' ', ""),
                item.to_token_stream().to_string().replace(' ', ""),
            ),
        ))
    }
}

fn same(a: &Type, b: &Type) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// The item type of a collection parameter.
fn item_type(ty: &Type) -> Option<(Type, Pass)> {
    match ty {
        Type::Reference(r) => match &*r.elem {
            Type::Slice(s) => Some(((*s.elem).clone(), Pass::Slice)),
            inner => collection_item(inner).map(|t| (t, Pass::Ref(Box::new(inner.clone())))),
        },
        Type::Paren(p) => item_type(&p.elem),
        other => collection_item(other).map(|t| (t, Pass::Owned)),
    }
}

fn collection_item(ty: &Type) -> Option<Type> {
    match outer_generic(ty) {
        Some((n, tys)) if COLLECTIONS.contains(&n.as_str()) && !tys.is_empty() => {
            Some(tys[0].clone())
        }
        _ => None,
    }
}

impl BatchPlan {
    /// Statements that turn `__cache_core_missing: Vec<K>` into the body's argument, and the
    /// argument expression.
    pub(crate) fn pass_missing(&self) -> (TokenStream, TokenStream) {
        let item = &self.item;
        match &self.pass {
            Pass::Owned => (
                quote!(let __cache_core_c = ::core::iter::FromIterator::from_iter(__cache_core_missing);),
                quote!(__cache_core_c),
            ),
            Pass::Slice => (
                quote!(let __cache_core_c: ::std::vec::Vec<#item> = __cache_core_missing;),
                quote!(&__cache_core_c[..]),
            ),
            Pass::Ref(c) => (
                quote!(let __cache_core_c: #c = ::core::iter::FromIterator::from_iter(__cache_core_missing);),
                quote!(&__cache_core_c),
            ),
        }
    }

    /// The body's return value as the runtime takes it: `Result<Vec<(K, V)>, E>`.
    pub(crate) fn to_pairs(&self, ret: TokenStream) -> TokenStream {
        let pairs = quote!(|__m| ::core::iter::Iterator::collect::<::std::vec::Vec<_>>(
            ::core::iter::IntoIterator::into_iter(__m)
        ));
        if self.result {
            quote!(::core::result::Result::map(#ret, #pairs))
        } else {
            quote!(::core::result::Result::<_, ::core::convert::Infallible>::Ok((#pairs)(#ret)))
        }
    }

    /// The fn's return value made from the runtime's `Result<Vec<(K, V)>, E>`.
    pub(crate) fn returned(&self, r: TokenStream) -> TokenStream {
        let collect = quote!(::core::iter::FromIterator::from_iter);
        if self.result {
            quote!(::core::result::Result::map(#r, #collect))
        } else {
            quote!(match #r {
                ::core::result::Result::Ok(__v) => #collect(__v),
                ::core::result::Result::Err(__never) => match __never {},
            })
        }
    }
}
