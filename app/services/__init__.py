"""The decisions behind the API: admission, accounts, task queries. Views call one of these."""
