// The fake API server's TLS identity: a self-signed certificate for 127.0.0.1 and localhost (valid
// 2000-2100), which is also the CA that kubeconfigs trust. It exists because kubectl and helm
// (client-go) never send credentials to a plain-http server; it protects nothing, so it is fixed
// rather than generated (Node cannot create certificates without extra dependencies).

export const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRhxUB/pCurKHsVAX
+0cFa4MOC+glnaD85MYm6nEbBKqhRANCAAR8qtHFmvnGDdpQsFxSGdUT4Q5hA1QQ
I0l6aMYpHhSQkmaFB2ePWcnBunlad/H0LeOHoQsW3IBHPfmql/ujaGAG
-----END PRIVATE KEY-----
`;

export const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBnzCCAUagAwIBAgIBATAKBggqhkjOPQQDAjAeMRwwGgYDVQQDDBNmYWtlLWt1
YmUtYXBpc2VydmVyMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAe
MRwwGgYDVQQDDBNmYWtlLWt1YmUtYXBpc2VydmVyMFkwEwYHKoZIzj0CAQYIKoZI
zj0DAQcDQgAEfKrRxZr5xg3aULBcUhnVE+EOYQNUECNJemjGKR4UkJJmhQdnj1nJ
wbp5Wnfx9C3jh6ELFtyARz35qpf7o2hgBqNzMHEwGgYDVR0RBBMwEYcEfwAAAYIJ
bG9jYWxob3N0MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgKEMBMGA1Ud
JQQMMAoGCCsGAQUFBwMBMB0GA1UdDgQWBBThpt9XB4T2Pcwpyh57VNYxp/BEdjAK
BggqhkjOPQQDAgNHADBEAiAzrwiA6ogPY4Ckae8ZWXg65nw//28D0bGDjSJLl50s
UQIgKAEi7+vd7A9NQFcmSU2ZY1C/IQz+pr0Yr9WG1i1rAFo=
-----END CERTIFICATE-----
`;
