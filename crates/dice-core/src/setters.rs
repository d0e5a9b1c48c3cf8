//! Chainable setters for the option structs.
//!
//! The option structs ([`crate::CacheOptions`], [`crate::Limits`], ...) keep their fields
//! public, to read them, but are `#[non_exhaustive]`, so a new option is not a breaking
//! change: other crates start from `Default::default()` and set what they need, either by
//! assigning a field or with these setters.

/// `setters!(Type { with_field => field: FieldType, ... })` gives `Type` a chainable
/// `with_field(self, value) -> Self` per field. For dice's own crates; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __option_setters {
    ($ty:ty { $($(#[$attr:meta])* $setter:ident => $field:ident : $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                $(#[$attr])*
                pub fn $setter(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
