package authtoken

import "testing"

func TestEqual(t *testing.T) {
	for _, tc := range []struct {
		got, want string
		ok        bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cre", "s3cret", false},
		{"s3cret!", "s3cret", false},
		{"", "s3cret", false},
		{"S3cret", "s3cret", false},
	} {
		if Equal([]byte(tc.got), []byte(tc.want)) != tc.ok {
			t.Errorf("Equal(%q, %q) = %v", tc.got, tc.want, !tc.ok)
		}
	}
	if !Allows(nil, "") || Allows(nil, "x") || !Allows([]byte("x"), "x") {
		t.Error("Allows")
	}
}
