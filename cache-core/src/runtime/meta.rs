//! What a cached fn is, as the macro describes it: its metadata ([`FnMeta`]), its resilience
//! settings ([`Resilience`]), what varies per call site ([`CallInfo`]), how a call uses the
//! cache ([`Mode`]), and custom keys ([`RawKey`]).

use std::time::Duration;

use crate::key::{KeyBuf, KeyPart};

/// What the macro knows about a cached function at compile time.
#[derive(Debug, Clone, Copy)]
pub struct FnMeta {
    /// `module_path!()` of the function.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Bumps the key namespace (`version = N`).
    pub version: u32,
    /// Absolute expiration.
    pub ttl: Option<Duration>,
    /// Sliding expiration.
    pub sliding: Option<Duration>,
    /// Each entry's `ttl` is extended by a random 0..`jitter` (`jitter = "5s"`), so entries
    /// filled together do not expire together.
    pub jitter: Option<Duration>,
    /// Named profile.
    pub profile: Option<&'static str>,
    /// Whether `None` is cached (informational; the generated `to_value` decides).
    pub cache_none: bool,
    /// Single flight on misses.
    pub lock: bool,
    /// The key is a custom template ([`RawKey`]) rather than path + arguments.
    pub custom_key: bool,
    /// Stale-while-revalidate, stale-if-error, timeout, refresh-ahead.
    pub resilience: Resilience,
    /// `weight = path`: the weight of a value (given as `&dyn Any` holding the fn's value
    /// type) for weight-bounded stores, in place of the measured one
    /// ([`crate::weight::of`]).
    pub weight: Option<fn(&dyn std::any::Any) -> usize>,
    /// `#[cached(local)]`: values stay in this process ([`crate::value::Local`]), in the
    /// backend if it keeps values in process, else in [`crate::registry::local_memory`].
    pub local: bool,
}

/// What a cached fn does with a stale entry and a slow or failing body: the options
/// `stale_while_revalidate`, `stale_if_error`, `timeout` and `refresh_ahead` of `#[cached]`
/// (and of a [`Profile`](crate::Profile); a fn's own settings win field by field).
///
/// ```
/// use std::time::Duration;
/// use cache_core::runtime::Resilience;
/// let r = Resilience { stale_if_error: Some(Duration::from_secs(60)), ..Resilience::NONE };
/// assert_eq!(r.stale_window(Duration::from_secs(300)), Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resilience {
    /// After `ttl`, serve the stale value for up to this long while one background refresh
    /// replaces it.
    pub stale_while_revalidate: Option<Duration>,
    /// When the body fails (or times out), return a value at most this long past its `ttl`.
    pub stale_if_error: Option<Duration>,
    /// With a stale value at hand, a body slower than this returns it and finishes in the
    /// background.
    pub timeout: Option<Duration>,
    /// A call within the last this-long of `ttl` is served and refreshes the entry in the
    /// background.
    pub refresh_ahead: Option<Duration>,
}

impl Resilience {
    /// None of them.
    pub const NONE: Resilience = Resilience {
        stale_while_revalidate: None,
        stale_if_error: None,
        timeout: None,
        refresh_ahead: None,
    };

    /// Field by field, `self`'s setting, else `other`'s.
    pub fn or(self, other: Resilience) -> Resilience {
        Resilience {
            stale_while_revalidate: self.stale_while_revalidate.or(other.stale_while_revalidate),
            stale_if_error: self.stale_if_error.or(other.stale_if_error),
            timeout: self.timeout.or(other.timeout),
            refresh_ahead: self.refresh_ahead.or(other.refresh_ahead),
        }
    }

    /// How far before `ttl` an entry stops being fresh (`refresh_ahead`, at most `ttl`).
    pub fn ahead(&self, ttl: Duration) -> Duration {
        self.refresh_ahead.unwrap_or(Duration::ZERO).min(ttl)
    }

    /// How long past its fresh time an entry of `ttl` stays readable as stale: the
    /// refresh-ahead period plus the longer of the two stale windows; `None` when nothing
    /// reads stale values.
    pub fn stale_window(&self, ttl: Duration) -> Option<Duration> {
        let after = self
            .stale_while_revalidate
            .unwrap_or(Duration::ZERO)
            .max(self.stale_if_error.unwrap_or(Duration::ZERO));
        let w = self.ahead(ttl) + after;
        (w > Duration::ZERO).then_some(w)
    }

    /// Whether a stale value `age` past its fresh time is served at once while a background
    /// refresh runs.
    pub(crate) fn serves_stale(&self, age: Duration) -> bool {
        let ahead = self.refresh_ahead.unwrap_or(Duration::ZERO);
        match self.stale_while_revalidate {
            Some(w) => age < ahead + w,
            None => age < ahead,
        }
    }

    /// Whether a stale value `age` past its fresh time may stand in for a failed or slow body.
    pub(crate) fn falls_back(&self, age: Duration) -> bool {
        let ahead = self.refresh_ahead.unwrap_or(Duration::ZERO);
        self.stale_if_error.is_some_and(|w| age < ahead + w)
    }

    /// Whether anything runs in the background (the body must then be owned, see the macro).
    pub fn background(&self) -> bool {
        self.stale_while_revalidate.is_some()
            || self.refresh_ahead.is_some()
            || self.timeout.is_some()
    }
}

/// What varies per call site: the `Self` type of methods and the type arguments of generic fns.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallInfo<'a> {
    /// `type_name::<Self>()` in methods.
    pub self_type: Option<&'static str>,
    /// `type_name::<T>()` of each type parameter.
    pub generics: &'a [&'static str],
}

/// How a call uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look up, fill on a miss.
    Normal,
    /// Drop the current entry (and its dependents), run the body, store.
    Refresh,
    /// A background refresh of a stale entry: never served stale, the entry stays until the
    /// new value replaces it; joins the key's flight like a miss.
    Revalidate,
}

/// A custom key (`key = "..."`): its text is the key, as is.
///
/// ```
/// let k = cache_core::runtime::RawKey("user:7".into());
/// assert_eq!(cache_core::key::readable(&k), "user:7");
/// ```
#[derive(Debug, Clone)]
pub struct RawKey(pub String);

impl KeyPart for RawKey {
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put(self.0.as_bytes());
    }
    fn write_readable(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}
