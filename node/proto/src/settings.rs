//! One declaration per setting for the programs' flags, their TOML files and their resolved
//! configuration.
//!
//! `spate-node` and `spate-gateway` take every setting as a command-line flag or as a key of
//! a TOML file (the flag wins), and resolve them into a configuration with each default
//! filled in. [`settings!`](crate::settings) writes the three from one list, so a setting
//! can't be added to one and forgotten in another, and the file accepts exactly the flags'
//! names (unknown keys are refused).
//!
//! Only a macro lives here (the expansion belongs to the program that invokes it, which must
//! depend on `clap` with `derive` and on `serde`); this crate stays free of I/O.

/// Declares the flags of a program and its resolved configuration from one list of settings.
///
/// ```ignore
/// spate_proto::settings! {
///     /// `my-server`: what it does (the help text).
///     #[derive(clap::Parser)]
///     #[command(name = "my-server", version)]
///     pub struct Flags {
///         // Flags that are not settings: never read from the file, not resolved.
///         /// TOML file with any of these settings (flags override it).
///         #[arg(long, value_name = "FILE")]
///         pub config: Option<std::path::PathBuf>,
///     }
///     /// The resolved configuration.
///     pub struct Config {
///         /// Address to listen on. [default: 127.0.0.1:7000]
///         #[arg(long, value_name = "HOST:PORT")]
///         listen: String = "127.0.0.1:7000".into(),
///         /// A setting without a default stays optional once resolved.
///         #[arg(long, value_name = "FILE")]
///         certificate: std::path::PathBuf,
///     }
/// }
/// ```
///
/// This generates `Flags` (a clap parser and a serde `Deserialize` that refuses unknown keys;
/// each setting an `Option`), `Flags::or(self, file)` (each setting given in `self`, else in
/// `file`), `Flags::with_defaults(self) -> Config`, and `Config` (each setting with a default
/// by value, each without one as an `Option`). A boolean setting is an `Option<bool>` flag:
/// give it `num_args = 0..=1, default_missing_value = "true"` so `--name` alone turns it on.
#[macro_export]
macro_rules! settings {
    (@resolved $ty:ty) => { ::core::option::Option<$ty> };
    (@resolved $ty:ty, $default:expr) => { $ty };
    (@value $value:expr) => { $value };
    (@value $value:expr, $default:expr) => { $value.unwrap_or_else(|| $default) };
    (
        $(#[$flags_meta:meta])*
        $flags_vis:vis struct $flags:ident {
            $(
                $(#[$extra_meta:meta])*
                $extra_vis:vis $extra:ident : $extra_ty:ty,
            )*
        }
        $(#[$resolved_meta:meta])*
        $resolved_vis:vis struct $resolved:ident {
            $(
                $(#[doc = $doc:expr])*
                #[arg($($arg:tt)*)]
                $name:ident : $ty:ty $(= $default:expr)?,
            )*
        }
    ) => {
        $(#[$flags_meta])*
        #[derive(Debug, Clone, Default, ::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $flags_vis struct $flags {
            $(
                $(#[$extra_meta])*
                #[serde(skip)]
                $extra_vis $extra: $extra_ty,
            )*
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                // Spelled `Option` for clap, which recognises an optional flag by that name.
                pub $name: Option<$ty>,
            )*
        }

        impl $flags {
            /// Each setting given here, else the one given in `file`.
            pub fn or(self, file: $flags) -> $flags {
                $flags {
                    $($extra: self.$extra,)*
                    $($name: self.$name.or(file.$name),)*
                }
            }

            /// The settings, with the default of each one that was not given.
            pub fn with_defaults(self) -> $resolved {
                $resolved {
                    $($name: $crate::settings!(@value self.$name $(, $default)?),)*
                }
            }
        }

        $(#[$resolved_meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        $resolved_vis struct $resolved {
            $(
                $(#[doc = $doc])*
                pub $name: $crate::settings!(@resolved $ty $(, $default)?),
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    crate::settings! {
        /// A program.
        #[derive(Parser)]
        #[command(name = "program")]
        pub struct Flags {
            /// Not a setting.
            #[arg(long)]
            pub config: Option<String>,
        }
        /// Its configuration.
        pub struct Config {
            /// With a default.
            #[arg(long)]
            port: u16 = 7000,
            /// Without one.
            #[arg(long)]
            name: String,
            /// A switch.
            #[arg(long, num_args = 0..=1, default_missing_value = "true")]
            fast: bool = false,
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let flags = Flags::parse_from(["program", "--name", "a", "--fast"]);
        let file: Flags = toml::from_str("name = \"b\"\nport = 9\n").unwrap();
        let config = flags.or(file).with_defaults();
        assert_eq!(
            config,
            Config {
                port: 9,
                name: Some("a".into()),
                fast: true,
            }
        );
        let config = Flags::parse_from(["program", "--fast=false"]).with_defaults();
        assert_eq!(
            config,
            Config {
                port: 7000,
                name: None,
                fast: false,
            }
        );
    }

    #[test]
    fn every_flag_that_is_a_setting_is_a_key_of_the_file_and_no_other() {
        for argument in Flags::command().get_arguments() {
            let key = argument.get_id().as_str();
            let parsed = toml::from_str::<Flags>(&format!("{key} = []\n"));
            let unknown = parsed
                .as_ref()
                .is_err_and(|error| error.to_string().contains("unknown field"));
            assert_eq!(unknown, key == "config", "{key}: {parsed:?}");
        }
        assert!(toml::from_str::<Flags>("colour = 1\n").is_err());
    }
}
