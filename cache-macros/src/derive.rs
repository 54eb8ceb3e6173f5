//! `#[derive(KeyPart)]` for structs and enums.
//!
//! Binary form: the fields in declaration order (each field's own encoding is self-delimiting),
//! preceded for enums by the variant index as 4 little-endian bytes. Readable form:
//! `Point{x:1,y:2}`, `Pair(1,"a")`, `Unit`, and for enums the variant: `Circle{r:1.0}`, `None`.
//! Fields marked `#[key_part(skip)]` are left out of both.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, Ident};

use crate::combine;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match derive(&input) {
        Ok(ts) => ts,
        Err(e) => e.to_compile_error(),
    }
}

/// Per field: is it skipped? Errors on malformed `#[key_part(...)]`.
fn skipped(field: &syn::Field, err: &mut Option<syn::Error>) -> bool {
    let mut skip = false;
    for attr in &field.attrs {
        if !attr.path().is_ident("key_part") {
            continue;
        }
        let r = attr.parse_nested_meta(|m| {
            if m.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(m.error("unknown `key_part` option; the only option is `#[key_part(skip)]`"))
            }
        });
        if let Err(e) = r {
            combine(err, e);
        }
    }
    skip
}

/// The binary and readable writes of one set of fields, bound to the names `bind(i)`.
struct Shape {
    /// Pattern of the fields (`{ a, b: _ }`, `(__f0, _)`, or nothing).
    pattern: TokenStream,
    binary: Vec<TokenStream>,
    readable: Vec<TokenStream>,
}

fn shape(name: &str, fields: &Fields, err: &mut Option<syn::Error>) -> Shape {
    let kp = quote!(::cache_core::__private::KeyPart);
    let mut binary = Vec::new();
    let mut readable = Vec::new();
    let mut pats = Vec::new();
    let mut first = true;
    match fields {
        Fields::Named(named) => {
            readable.push(quote!(__out.push_str(concat!(#name, "{"));));
            for f in &named.named {
                let id = f.ident.as_ref().expect("named field");
                if skipped(f, err) {
                    pats.push(quote!(#id: _));
                    continue;
                }
                pats.push(quote!(#id));
                binary.push(quote!(#kp::write_binary(#id, __out);));
                let label = if first {
                    format!("{id}:")
                } else {
                    format!(",{id}:")
                };
                first = false;
                readable.push(quote!(__out.push_str(#label); #kp::write_readable(#id, __out);));
            }
            readable.push(quote!(__out.push('}');));
            Shape {
                pattern: quote!({ #(#pats),* }),
                binary,
                readable,
            }
        }
        Fields::Unnamed(unnamed) => {
            readable.push(quote!(__out.push_str(concat!(#name, "("));));
            for (i, f) in unnamed.unnamed.iter().enumerate() {
                if skipped(f, err) {
                    pats.push(quote!(_));
                    continue;
                }
                let id = format_ident!("__f{}", i);
                pats.push(quote!(#id));
                binary.push(quote!(#kp::write_binary(#id, __out);));
                let sep = (!first).then(|| quote!(__out.push(',');));
                first = false;
                readable.push(quote!(#sep #kp::write_readable(#id, __out);));
            }
            readable.push(quote!(__out.push(')');));
            Shape {
                pattern: quote!(( #(#pats),* )),
                binary,
                readable,
            }
        }
        Fields::Unit => Shape {
            pattern: quote!(),
            binary,
            readable: vec![quote!(__out.push_str(#name);)],
        },
    }
}

fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let p = quote!(::cache_core::__private);
    let ty = &input.ident;
    let mut err = None;
    let (binary, readable) = match &input.data {
        Data::Struct(s) => {
            let sh = shape(&ty.to_string(), &s.fields, &mut err);
            let pat = &sh.pattern;
            let (b, r) = (&sh.binary, &sh.readable);
            (
                quote!(let #ty #pat = self; #(#b)*),
                quote!(let #ty #pat = self; #(#r)*),
            )
        }
        Data::Enum(e) => {
            let mut barms = Vec::new();
            let mut rarms = Vec::new();
            for (i, v) in e.variants.iter().enumerate() {
                let vid: &Ident = &v.ident;
                let sh = shape(&vid.to_string(), &v.fields, &mut err);
                let pat = &sh.pattern;
                let (b, r) = (&sh.binary, &sh.readable);
                let tag = i as u32;
                barms.push(quote!(Self::#vid #pat => { __out.put(&#tag.to_le_bytes()); #(#b)* }));
                rarms.push(quote!(Self::#vid #pat => { #(#r)* }));
            }
            if barms.is_empty() {
                (quote!(match *self {}), quote!(match *self {}))
            } else {
                (
                    quote!(match self { #(#barms)* }),
                    quote!(match self { #(#rarms)* }),
                )
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "`#[derive(KeyPart)]` supports structs and enums, not unions; implement `KeyPart` by hand",
            ))
        }
    };
    if let Some(e) = err {
        return Err(e);
    }
    let mut generics = input.generics.clone();
    let bounded: Vec<Ident> = generics.type_params().map(|t| t.ident.clone()).collect();
    {
        let wc = generics.make_where_clause();
        for t in bounded {
            wc.predicates.push(syn::parse_quote!(#t: #p::KeyPart));
        }
    }
    let (impl_g, ty_g, where_c) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_g #p::KeyPart for #ty #ty_g #where_c {
            #[allow(unused_variables)]
            fn write_binary(&self, __out: &mut #p::KeyBuf) {
                #binary
            }
            #[allow(unused_variables)]
            fn write_readable(&self, __out: &mut ::std::string::String) {
                #readable
            }
        }
    })
}
