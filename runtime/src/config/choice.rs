//! Closed sets of string values (`failback = "manual" | "auto"`): one enum each, declared with [`choice!`].

/// An enum written in the config as one of a fixed set of strings.
pub trait Choice: Sized + Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    fn from_str_exact(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }

    /// `"a", "b" or "c"` for messages.
    fn choices() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|c| format!("{:?}", c.as_str())).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => last.clone(),
            None => String::new(),
        }
    }
}

/// Declares a `Choice` enum: `choice!(/// doc
/// pub enum Failback { Manual = "manual", Auto = "auto" });`
macro_rules! choice {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::config::choice::Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::config::choice::Choice::as_str(*self))
            }
        }
    };
}
pub(crate) use choice;

#[cfg(test)]
mod tests {
    use super::*;

    choice!(
        /// test
        pub enum Colour {
            Red = "red",
            Green = "green",
            Blue = "blue",
        }
    );

    #[test]
    fn choices_parse_exactly_and_list_themselves() {
        assert_eq!(Colour::from_str_exact("green"), Some(Colour::Green));
        assert_eq!(Colour::from_str_exact("Green"), None);
        assert_eq!(Colour::choices(), "\"red\", \"green\" or \"blue\"");
        assert_eq!(Colour::Blue.to_string(), "blue");
    }
}
