//! The system's user database (NSS: /etc/passwd, LDAP, ...), read for names of uids.

/// The name of `uid` in the system's user database, `None` when no account has it.
pub fn name_of(uid: u32) -> Option<String> {
    uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
}

/// The uid of the account named `name`, `None` when there is none.
pub fn uid_of(name: &str) -> Option<u32> {
    uzers::get_user_by_name(name).map(|u| u.uid())
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_named() {
        assert_eq!(super::name_of(0).as_deref(), Some("root"));
        assert_eq!(super::uid_of("root"), Some(0));
        assert_eq!(super::uid_of("no-such-user-netledger"), None);
    }
}
