// Package sdk will hold mecha's thin Go SDK. Apps can use the Dapr SDKs
// against mecha today: the APIs are the same.
package sdk
