//! String templates over the parameters of a fn: `"user:{id}"`, `"team:{user.team}"`.
//!
//! Used by `depends_on`, `key` and `#[invalidates(dependencies = [...])]`. A placeholder is a
//! parameter name optionally followed by field accesses (`{user.team.id}`, `{self.id}`, `{pair.0}`);
//! it is formatted with `Display`. `{{` and `}}` are literal braces. Names are checked when the
//! macro expands: an unknown name is an error on the string literal that names the parameters.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::LitStr;

/// A parsed template: the `format!` string and the placeholders, in order.
pub(crate) struct Template {
    pub lit: LitStr,
    pub format: String,
    /// Each placeholder as (root name, field path).
    pub holes: Vec<(String, Vec<String>)>,
}

impl Template {
    /// Parses `lit` and checks every root name against `names` (the fn's parameter names, plus
    /// `self` when the fn has a receiver).
    pub(crate) fn parse(lit: &LitStr, names: &[String]) -> syn::Result<Template> {
        let text = lit.value();
        let mut format = String::new();
        let mut holes = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    format.push_str("{{");
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    format.push_str("}}");
                }
                '}' => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                        "unmatched `}}` in template \"{text}\"; write `}}}}` for a literal brace"
                    ),
                    ))
                }
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("unclosed `{{` in template \"{text}\"; write `{{{{` for a literal brace"),
                        ));
                    }
                    let inner = inner.trim();
                    let mut parts = inner.split('.');
                    let root = parts.next().unwrap_or_default().to_string();
                    let fields: Vec<String> = parts.map(str::to_string).collect();
                    let ident_ok = |s: &str| {
                        !s.is_empty()
                            && s.chars().all(|c| c == '_' || c.is_alphanumeric())
                            && !s.starts_with(|c: char| c.is_ascii_digit())
                    };
                    let field_ok = |s: &str| {
                        ident_ok(s) || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
                    };
                    if !ident_ok(&root) || !fields.iter().all(|f| field_ok(f)) {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid placeholder `{{{inner}}}` in template \"{text}\": a placeholder is a parameter name, optionally with fields (`{{user.team}}`); format specs are not supported"
                            ),
                        ));
                    }
                    if !names.contains(&root) {
                        let list = if names.is_empty() {
                            "the fn has no named parameters".to_string()
                        } else {
                            format!(
                                "the parameters are {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "template \"{text}\" names an unknown parameter `{root}`; {list}"
                            ),
                        ));
                    }
                    format.push_str("{}");
                    holes.push((root, fields));
                }
                c => format.push(c),
            }
        }
        Ok(Template {
            lit: lit.clone(),
            format,
            holes,
        })
    }

    /// The root names the template uses, in order of first use.
    pub(crate) fn roots(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (r, _) in &self.holes {
            if !out.contains(&r.as_str()) {
                out.push(r);
            }
        }
        out
    }

    /// `::std::format!("user:{}", id)`, the placeholders spanned on the literal (so a field that
    /// does not exist or is not `Display` is reported there).
    pub(crate) fn format_expr(&self) -> TokenStream {
        let span = self.lit.span();
        let fmt = LitStr::new(&self.format, span);
        let args = self.holes.iter().map(|(root, fields)| {
            let root = if root == "self" {
                syn::Ident::new("self", span)
            } else {
                syn::Ident::new(root, span)
            };
            let fields = fields.iter().map(|f| {
                if f.chars().all(|c| c.is_ascii_digit()) {
                    let idx = syn::Index {
                        index: f.parse().unwrap_or(0),
                        span,
                    };
                    quote_spanned!(span=> .#idx)
                } else {
                    let f = syn::Ident::new(f, span);
                    quote_spanned!(span=> .#f)
                }
            });
            quote_spanned!(span=> #root #(#fields)*)
        });
        quote!(::std::format!(#fmt #(, #args)*))
    }
}

/// Parses `["a", "b"]` (an array of string literals).
pub(crate) fn lit_str_array(expr: &syn::Expr, option: &str) -> syn::Result<Vec<LitStr>> {
    let syn::Expr::Array(arr) = expr else {
        return Err(syn::Error::new_spanned(
            expr,
            format!(
                "`{option}` takes a list of string templates, e.g. `{option} = [\"user:{{id}}\"]`"
            ),
        ));
    };
    let mut out = Vec::new();
    let mut err: Option<syn::Error> = None;
    for e in &arr.elems {
        match e {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => out.push(s.clone()),
            other => crate::combine(
                &mut err,
                syn::Error::new_spanned(
                    other,
                    format!("`{option}` entries must be string literals"),
                ),
            ),
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
