//! Validation of names that come from clients. They end up in storage keys
//! and object paths, so they are restricted to a safe alphabet, and errors
//! quote them only when that cannot leak a PII value.

/// Longest tenant or contract id.
pub const ID_MAX: usize = 128;
/// Longest file name.
pub const FILE_NAME_MAX: usize = 255;
/// Most metadata fields (plain and PII together) on one contract.
pub const FIELDS_MAX: usize = 64;
/// Longest metadata field value, in bytes.
pub const FIELD_VALUE_MAX: usize = 4096;
/// Most files in one contract version.
pub const FILES_MAX: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Tenant and contract ids: letters, digits, `.`, `_`, `-`; not starting
/// with `.`; at most [`ID_MAX`] characters.
pub fn check_id(kind: &str, id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() || id.len() > ID_MAX {
        return Err(InvalidInput(format!("{kind} must be 1 to {ID_MAX} characters")));
    }
    if id.starts_with('.') || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(InvalidInput(format!("{kind} {id:?} may hold only letters, digits, '.', '_' and '-', and not start with '.'")));
    }
    Ok(())
}

/// File names are shown back to users but never used as paths.
pub fn check_file_name(name: &str) -> Result<(), InvalidInput> {
    if name.is_empty() || name.len() > FILE_NAME_MAX || name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(InvalidInput(format!("file name must be 1 to {FILE_NAME_MAX} bytes without '/', '\\\\' or control characters")));
    }
    if name == "." || name == ".." {
        return Err(InvalidInput("file name must not be '.' or '..'".into()));
    }
    Ok(())
}

/// Field names: like ids but at most 64 characters. The value is never
/// quoted: it may be PII.
pub fn check_field(name: &str, value: &str) -> Result<(), InvalidInput> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(InvalidInput(format!("field name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'")));
    }
    if value.len() > FIELD_VALUE_MAX {
        return Err(InvalidInput(format!("value of field {name:?} is longer than {FIELD_VALUE_MAX} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_path_tricks() {
        assert!(check_id("tenant", "acme-01").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(ID_MAX + 1)] {
            assert!(check_id("tenant", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names_refuse_separators() {
        assert!(check_file_name("contract v2.pdf").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    // A PII value that is too long must not appear in the error.
    #[test]
    fn field_errors_never_quote_the_value() {
        let secret = "110101199003077777".repeat(300);
        let err = check_field("id_card", &secret).unwrap_err();
        assert!(!err.0.contains("110101199003077777"));
    }
}
