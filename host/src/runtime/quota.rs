//! How a capability declares its quotas. Each capability keeps its `limits.*` keys in
//! its own `quotas.rs` with [`quotas!`]; [`Limits`](super::limits::Limits) reads every
//! key from the one that declares it, so the user's `[plugins.NAME.limits]` table stays
//! flat while no list of all keys is written by hand.

use serde::de::MapAccess;

/// A capability's quotas, readable one `limits.*` key at a time.
pub trait Quotas: Default {
    /// The keys, as the user writes them (`state_key_bytes`, ...).
    const KEYS: &'static [&'static str];

    /// Read the value of `key` from `map` if the key is one of these quotas; `false`
    /// (nothing read) otherwise.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Declares a quota struct: each field with its key in the `limits` table, its type and
/// its default.
macro_rules! quotas {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $key:literal => $field:ident: $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $crate::runtime::quota::Quotas for $name {
            const KEYS: &'static [&'static str] = &[$($key),*];

            fn read<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $( $key => self.$field = map.next_value()?, )*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

pub(crate) use quotas;
