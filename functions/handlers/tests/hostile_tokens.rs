//! What fuzzing does at length (`fuzz/`, nightly), in a short run on stable for CI: the
//! authorizer fed noise, near-tokens and valid tokens with one character changed. It never
//! panics and never lets any of them in.

use livesync_core::access::Grants;
use livesync_handlers::authorizer::{Authorizer, Claims, mint};
use proptest::prelude::*;

const SECRET: &[u8] = b"a-property-test-secret-of-32-bytes!!";

fn valid() -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    mint(SECRET, &Claims { sub: "ann".into(), exp, rooms: Grants::all() }).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn noise_and_near_tokens_are_refused(token in prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}",
        "eyJ[A-Za-z0-9_-]{0,40}\\.eyJ[A-Za-z0-9_-]{0,80}\\.?[A-Za-z0-9_-]{0,60}",
    ]) {
        let authorizer = Authorizer::hs256(SECRET).unwrap();
        prop_assert!(authorizer.authorize(Some(&token), None, "c").is_err());
    }

    #[test]
    fn a_valid_token_with_one_character_changed_is_refused(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
        let token = valid();
        let at = position.index(token.len());
        let mut changed = token.clone();
        changed.replace_range(at..at + 1, &replacement);
        prop_assume!(changed != token);
        let authorizer = Authorizer::hs256(SECRET).unwrap();
        // Base64url has spare bits in its last character: a change there may decode the same.
        let outcome = authorizer.authorize(Some(&changed), None, "c");
        if let Ok(caller) = &outcome {
            prop_assert_eq!(caller.user.as_deref(), Some("ann"), "only an equivalent encoding of the same token may pass");
        }
    }
}
