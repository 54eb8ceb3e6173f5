//! The options of `#[cached(...)]`, parsed and checked before anything is generated.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Meta, Token};

use crate::combine;
use crate::duration::parse_nanos;

/// Every option `#[cached]` accepts (for the "unknown option" message).
const OPTIONS: &[&str] = &[
    "ttl",
    "sliding",
    "jitter",
    "depends_on",
    "key",
    "skip",
    "include_self",
    "profile",
    "cache_none",
    "lock",
    "version",
    "companions",
    "batch",
    "stale_while_revalidate",
    "stale_if_error",
    "timeout",
    "refresh_ahead",
    "weight",
    "local",
];

/// The parsed options of one `#[cached(...)]`.
#[derive(Default)]
pub(crate) struct CachedOptions {
    pub ttl: Option<u64>,
    pub sliding: Option<u64>,
    /// `jitter = "5s"` and the span of the option (for "needs a ttl").
    pub jitter: Option<(u64, Span)>,
    pub depends_on: Vec<LitStr>,
    pub key: Option<LitStr>,
    pub skip: Vec<Ident>,
    /// The `include_self` token, when present.
    pub include_self: Option<Ident>,
    pub profile: Option<LitStr>,
    /// `cache_none = false` (with the span of the option, for "only on Option" errors).
    pub cache_none: Option<(bool, Span)>,
    pub lock: bool,
    pub version: u32,
    /// `companions = false` (trait impls: no companion items can be added there).
    pub companions: bool,
    /// `batch(ids)`: the collection parameter whose items are cached one by one.
    pub batch: Option<Ident>,
    /// `stale_while_revalidate = "30s"`, `stale_if_error = "1h"`, `timeout = "200ms"`,
    /// `refresh_ahead = "10s"` (nanoseconds, and the option's span).
    pub stale_while_revalidate: Option<(u64, Span)>,
    pub stale_if_error: Option<(u64, Span)>,
    pub timeout: Option<(u64, Span)>,
    pub refresh_ahead: Option<(u64, Span)>,
    /// `weight = path::to::fn`: a value's weight (`fn(&V) -> usize`) for `max_weight`.
    pub weight: Option<syn::Path>,
    /// `local`: values stay in this process (never serialized), with the option's span.
    pub local: Option<Span>,
}

impl CachedOptions {
    /// The first option that runs the body in the background (after the call returned), and
    /// its name.
    pub(crate) fn background(&self) -> Option<(&'static str, Span)> {
        [
            ("stale_while_revalidate", self.stale_while_revalidate),
            ("refresh_ahead", self.refresh_ahead),
            ("timeout", self.timeout),
        ]
        .into_iter()
        .find_map(|(n, o)| o.map(|(_, s)| (n, s)))
    }

    /// Any of the four resilience options.
    pub(crate) fn resilient(&self) -> bool {
        self.background().is_some() || self.stale_if_error.is_some()
    }
}

impl CachedOptions {
    /// Parses the attribute's tokens. Every problem is reported, not just the first; the options
    /// that did parse are returned too, so later checks (templates, `skip`) still run.
    pub(crate) fn parse(tokens: TokenStream) -> (CachedOptions, Option<syn::Error>) {
        let mut o = CachedOptions {
            lock: true,
            companions: true,
            ..Default::default()
        };
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(m) => m,
            Err(e) => return (o, Some(e)),
        };
        let mut err: Option<syn::Error> = None;
        let mut seen: Vec<String> = Vec::new();
        for meta in metas {
            let path = meta.path();
            let Some(name) = path.get_ident().map(Ident::to_string) else {
                combine(&mut err, syn::Error::new_spanned(path, unknown(path)));
                continue;
            };
            if seen.contains(&name) {
                combine(
                    &mut err,
                    syn::Error::new_spanned(path, format!("duplicate option `{name}`")),
                );
                continue;
            }
            seen.push(name.clone());
            if let Err(e) = o.apply(&name, &meta) {
                combine(&mut err, e);
            }
        }
        for (name, opt) in [
            ("stale_while_revalidate", o.stale_while_revalidate),
            ("stale_if_error", o.stale_if_error),
            ("timeout", o.timeout),
            ("refresh_ahead", o.refresh_ahead),
        ] {
            if let (Some((_, span)), None, None) = (opt, o.ttl, &o.profile) {
                combine(
                    &mut err,
                    syn::Error::new(
                        span,
                        format!("`{name}` works from the entry's expiry: add a `ttl` (or a `profile` that has one)"),
                    ),
                );
            }
        }
        if let (Some((_, span)), None) = (o.timeout, o.stale_if_error) {
            combine(
                &mut err,
                syn::Error::new(
                    span,
                    "`timeout` returns the stale value when the body is slow: add `stale_if_error = \"..\"` (how stale a value it may return)",
                ),
            );
        }
        if let (Some((ahead, span)), Some(ttl)) = (o.refresh_ahead, o.ttl) {
            if ahead >= ttl {
                combine(
                    &mut err,
                    syn::Error::new(span, "`refresh_ahead` must be shorter than `ttl`"),
                );
            }
        }
        if let Some((_, span)) = o.jitter {
            if o.ttl.is_none() && o.profile.is_none() {
                combine(
                    &mut err,
                    syn::Error::new(
                        span,
                        "`jitter` spreads the expiry of `ttl`: add a `ttl` (or a `profile` that has one)",
                    ),
                );
            }
        }
        (o, err)
    }

    fn apply(&mut self, name: &str, meta: &Meta) -> syn::Result<()> {
        match name {
            "ttl" => self.ttl = Some(duration(value(meta, "ttl = \"5m\"")?)?),
            "sliding" => self.sliding = Some(duration(value(meta, "sliding = \"30s\"")?)?),
            "jitter" => {
                self.jitter = Some((duration(value(meta, "jitter = \"5s\"")?)?, span_of(meta)))
            }
            "depends_on" => {
                let v = value(meta, "depends_on = [\"user:{id}\"]")?;
                self.depends_on = crate::template::lit_str_array(v, "depends_on")?;
            }
            "key" => self.key = Some(lit_str(value(meta, "key = \"user:{id}\"")?, "key")?),
            "profile" => {
                let lit = lit_str(value(meta, "profile = \"hot\"")?, "profile")?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "the profile name is empty"));
                }
                self.profile = Some(lit);
            }
            "cache_none" => {
                let v = value(meta, "cache_none = false")?;
                self.cache_none = Some((lit_bool(v, "cache_none")?, span_of(meta)));
            }
            "lock" => self.lock = lit_bool(value(meta, "lock = false")?, "lock")?,
            "weight" => match value(meta, "weight = my_weight")? {
                Expr::Path(p) if p.qself.is_none() => self.weight = Some(p.path.clone()),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`weight` takes the path of a `fn(&V) -> usize` (the value's weight in bytes for `max_weight`), e.g. `weight = page_weight`",
                    ))
                }
            },
            "companions" => {
                self.companions = lit_bool(value(meta, "companions = false")?, "companions")?
            }
            "version" => {
                let v = value(meta, "version = 2")?;
                match v {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => self.version = i.base10_parse::<u32>()?,
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`version` takes an integer, e.g. `version = 2`",
                        ))
                    }
                }
            }
            "local" => match meta {
                Meta::Path(p) => self.local = Some(span_of(meta)).filter(|_| p.is_ident("local")),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`local` takes no value: write `local`",
                    ))
                }
            },
            "include_self" => match meta {
                Meta::Path(p) => self.include_self = p.get_ident().cloned(),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`include_self` takes no value: write `include_self`",
                    ))
                }
            },
            "stale_while_revalidate" => {
                self.stale_while_revalidate = Some(spanned_duration(meta, "30s")?)
            }
            "stale_if_error" => self.stale_if_error = Some(spanned_duration(meta, "1h")?),
            "timeout" => self.timeout = Some(spanned_duration(meta, "200ms")?),
            "refresh_ahead" => self.refresh_ahead = Some(spanned_duration(meta, "10s")?),
            "batch" => {
                let usage = "`batch` takes the name of the collection parameter: `batch(ids)`";
                let Meta::List(list) = meta else {
                    return Err(syn::Error::new_spanned(meta, usage));
                };
                self.batch = Some(
                    syn::parse2::<Ident>(list.tokens.clone())
                        .map_err(|_| syn::Error::new_spanned(&list.tokens, usage))?,
                );
            }
            "skip" => match meta {
                Meta::List(list) => {
                    let idents = Punctuated::<Ident, Token![,]>::parse_terminated
                        .parse2(list.tokens.clone())
                        .map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "`skip` takes parameter names: `skip(db, conn)`",
                            )
                        })?;
                    self.skip = idents.into_iter().collect();
                }
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "`skip` takes parameter names: `skip(db, conn)`",
                    ))
                }
            },
            _ => return Err(syn::Error::new_spanned(meta.path(), unknown(meta.path()))),
        }
        Ok(())
    }
}

fn span_of(meta: &Meta) -> Span {
    meta.path()
        .get_ident()
        .map_or_else(Span::call_site, Ident::span)
}

fn unknown(path: &syn::Path) -> String {
    let name = quote::quote!(#path).to_string().replace(' ', "");
    let hint = OPTIONS
        .iter()
        .map(|o| (edit_distance(o, &name), o))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, o)| format!("did you mean `{o}`? "))
        .unwrap_or_default();
    format!(
        "unknown option `{name}`; {hint}the options are: {}",
        OPTIONS.join(", ")
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn value<'m>(meta: &'m Meta, example: &str) -> syn::Result<&'m Expr> {
    match meta {
        Meta::NameValue(nv) => Ok(&nv.value),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a value: `{example}`"),
        )),
    }
}

fn lit_str(expr: &Expr, option: &str) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{option}` takes a string literal"),
        )),
    }
}

fn lit_bool(expr: &Expr, option: &str) -> syn::Result<bool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{option}` takes `true` or `false`"),
        )),
    }
}

/// `name = "<duration>"` and the option's span (`example` shows a value in the error).
fn spanned_duration(meta: &Meta, example: &str) -> syn::Result<(u64, Span)> {
    let name = meta
        .path()
        .get_ident()
        .map(Ident::to_string)
        .unwrap_or_default();
    let v = value(meta, &format!("{name} = \"{example}\""))?;
    Ok((duration(v)?, span_of(meta)))
}

fn duration(expr: &Expr) -> syn::Result<u64> {
    let lit = lit_str(expr, "a duration option")?;
    parse_nanos(&lit.value()).map_err(|m| syn::Error::new(lit.span(), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option() {
        let (o, err) = CachedOptions::parse(quote::quote!(
            ttl = "5m",
            sliding = "30s",
            depends_on = ["user:{id}"],
            key = "k:{id}",
            skip(db, conn),
            include_self,
            profile = "hot",
            cache_none = false,
            lock = false,
            version = 3,
            companions = false
        ));
        assert!(err.is_none());
        assert_eq!(o.ttl, Some(300_000_000_000));
        assert_eq!(o.sliding, Some(30_000_000_000));
        assert_eq!(o.depends_on.len(), 1);
        assert_eq!(o.skip.len(), 2);
        assert!(o.include_self.is_some() && !o.lock && !o.companions);
        assert_eq!(o.version, 3);
        assert!(!o.cache_none.unwrap().0);
    }

    #[test]
    fn reports_every_error() {
        let (_, e) = CachedOptions::parse(quote::quote!(tll = "5m", sliding = "5x", lock = 1));
        let msgs: Vec<String> = e.unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("did you mean `ttl`"));
    }
}
