package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2's batch calls (AcceptVpcEndpointConnections, DeleteVpcEndpoints,
// DeleteVpcEndpointServiceConfigurations) answer HTTP 200 and list what they could not do in
// Unsuccessful; an error is only returned for the call as a whole. Ignoring the list means
// waiting for something that will never happen.

// unsuccessful returns the first unsuccessful item as an OpError (nil when there is none),
// skipping items whose code is in ignore (e.g. NotFound on a delete: already gone).
func unsuccessful(kind, name, call string, items []ec2t.UnsuccessfulItem, hint string, ignore ...string) *OpError {
	for _, it := range items {
		code, msg := "", ""
		if it.Error != nil {
			code, msg = deref(it.Error.Code), deref(it.Error.Message)
		}
		skip := false
		for _, c := range ignore {
			skip = skip || c == code
		}
		if skip {
			continue
		}
		if msg == "" {
			msg = "no message"
		}
		return &OpError{Kind: kind, Name: name, Call: call, Code: code, Message: fmt.Sprintf("%s (%s)", msg, deref(it.ResourceId)),
			Hint: hint, Err: fmt.Errorf("%s unsuccessful for %s: %s", call, deref(it.ResourceId), code)}
	}
	return nil
}

// clientToken derives an EC2 ClientToken from what the create asks for, so that an SDK retry
// or a second apply running at the same time gets the same resource back instead of a
// duplicate ("Ensuring idempotency", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
// generation > 1 is used when an earlier resource made with the same parameters was deleted
// (EC2 keeps answering a token with its original resource for a while).
func clientToken(db, what string, generation int, parts ...string) string {
	sort.Strings(parts)
	sum := sha256.Sum256([]byte(db + "\x00" + what + "\x00" + strings.Join(parts, "\x00")))
	tok := "rdsvalet-" + hex.EncodeToString(sum[:])[:40]
	if generation > 1 {
		tok += fmt.Sprintf("-g%d", generation)
	}
	return tok // at most 64 ASCII characters, as EC2 requires
}

func tagParts(tags map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(tags) {
		out = append(out, "tag:"+k+"="+tags[k])
	}
	return out
}
