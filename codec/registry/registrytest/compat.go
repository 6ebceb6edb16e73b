package registrytest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/dispytch/dispytch-go/internal/avroutil"
	"github.com/dispytch/dispytch-go/internal/jsutil"
)

// validate parses a schema of its type.
func validate(typ, schema string) error {
	switch typ {
	case "AVRO":
		_, err := avroutil.Parse(schema)
		return err
	case "JSON":
		_, err := jsutil.Compile("schema", schema)
		return err
	case "PROTOBUF":
		_, err := fileDescriptor(schema)
		return err
	}
	return fmt.Errorf("unknown schema type %q", typ)
}

// fileDescriptor parses a Protobuf schema in the serialized form, a base64
// FileDescriptorProto (what Confluent's serializers register and read with
// format=serialized).
func fileDescriptor(schema string) (*descriptorpb.FileDescriptorProto, error) {
	b, err := base64.StdEncoding.DecodeString(schema)
	if err != nil {
		return nil, errors.New("registrytest reads Protobuf schemas in the serialized form only (a base64 FileDescriptorProto), not .proto text")
	}
	fd := new(descriptorpb.FileDescriptorProto)
	if err := proto.Unmarshal(b, fd); err != nil {
		return nil, fmt.Errorf("not a FileDescriptorProto: %w", err)
	}
	return fd, nil
}

func sameSchema(typ, a, b string) bool {
	if a == b {
		return true
	}
	switch typ {
	case "AVRO":
		x, err1 := avroutil.Parse(a)
		y, err2 := avroutil.Parse(b)
		return err1 == nil && err2 == nil && x.Fingerprint() == y.Fingerprint()
	case "JSON":
		var x, y any
		if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
			return false
		}
		bx, _ := json.Marshal(x)
		by, _ := json.Marshal(y)
		return bytes.Equal(bx, by)
	case "PROTOBUF":
		x, err1 := fileDescriptor(a)
		y, err2 := fileDescriptor(b)
		return err1 == nil && err2 == nil && proto.Equal(x, y)
	}
	return false
}

// compatible returns why a reader of schema reader cannot read data written
// with schema writer; dir names the direction in the messages.
func compatible(typ, reader, writer, dir string) []string {
	switch typ {
	case "AVRO":
		r, _ := avroutil.Parse(reader)
		w, _ := avroutil.Parse(writer)
		if err := avro.NewSchemaCompatibility().Compatible(r, w); err != nil {
			return []string{fmt.Sprintf("%s: %v", dir, err)}
		}
	case "JSON":
		var r, w map[string]any
		_ = json.Unmarshal([]byte(reader), &r)
		_ = json.Unmarshal([]byte(writer), &w)
		return jsonCompatible(dir, "#", r, w)
	case "PROTOBUF":
		r, _ := fileDescriptor(reader)
		w, _ := fileDescriptor(writer)
		return protoCompatible(dir, r, w)
	}
	return nil
}

// jsonCompatible: a reader schema r accepts what a writer schema w allowed,
// as far as these rules see: a property whose type changed, a property the
// reader requires that the writer did not, a property the writer had that
// the reader's closed content model (additionalProperties false) does not.
func jsonCompatible(dir, path string, r, w map[string]any) []string {
	var msgs []string
	if rt, wt := fmt.Sprint(r["type"]), fmt.Sprint(w["type"]); r["type"] != nil && w["type"] != nil && rt != wt {
		msgs = append(msgs, fmt.Sprintf("%s: TYPE_CHANGED at %s: %s to %s", dir, path, wt, rt))
	}
	rp, _ := r["properties"].(map[string]any)
	wp, _ := w["properties"].(map[string]any)
	req := func(s map[string]any) map[string]bool {
		m := map[string]bool{}
		l, _ := s["required"].([]any)
		for _, x := range l {
			if n, ok := x.(string); ok {
				m[n] = true
			}
		}
		return m
	}
	rr, wr := req(r), req(w)
	var names []string
	for n := range rr {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !wr[n] {
			msgs = append(msgs, fmt.Sprintf("%s: REQUIRED_PROPERTY_ADDED at %s/properties/%s", dir, path, n))
		}
	}
	closed := r["additionalProperties"] == false
	names = names[:0]
	for n := range wp {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rs, ok := rp[n].(map[string]any)
		if !ok {
			if closed {
				msgs = append(msgs, fmt.Sprintf("%s: PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at %s/properties/%s", dir, path, n))
			}
			continue
		}
		ws, _ := wp[n].(map[string]any)
		msgs = append(msgs, jsonCompatible(dir, path+"/properties/"+n, rs, ws)...)
	}
	return msgs
}

// protoCompatible: a reader's descriptor r reads a writer's w unless the
// package changed, a message is gone, or a field number changed type or
// label.
func protoCompatible(dir string, r, w *descriptorpb.FileDescriptorProto) []string {
	var msgs []string
	if r.GetPackage() != w.GetPackage() {
		msgs = append(msgs, fmt.Sprintf("%s: PACKAGE_CHANGED from %q to %q", dir, w.GetPackage(), r.GetPackage()))
	}
	rm := map[string]*descriptorpb.DescriptorProto{}
	var collect func(prefix string, ms []*descriptorpb.DescriptorProto, into map[string]*descriptorpb.DescriptorProto)
	collect = func(prefix string, ms []*descriptorpb.DescriptorProto, into map[string]*descriptorpb.DescriptorProto) {
		for _, m := range ms {
			into[prefix+m.GetName()] = m
			collect(prefix+m.GetName()+".", m.GetNestedType(), into)
		}
	}
	wm := map[string]*descriptorpb.DescriptorProto{}
	collect("", r.GetMessageType(), rm)
	collect("", w.GetMessageType(), wm)
	var names []string
	for n := range wm {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rd, ok := rm[n]
		if !ok {
			msgs = append(msgs, fmt.Sprintf("%s: MESSAGE_REMOVED %s", dir, n))
			continue
		}
		fields := map[int32]*descriptorpb.FieldDescriptorProto{}
		for _, f := range rd.GetField() {
			fields[f.GetNumber()] = f
		}
		for _, wf := range wm[n].GetField() {
			rf, ok := fields[wf.GetNumber()]
			if !ok {
				continue // removing a field is compatible in proto3
			}
			if wireGroup(rf.GetType()) != wireGroup(wf.GetType()) || (rf.GetTypeName() != wf.GetTypeName()) {
				msgs = append(msgs, fmt.Sprintf("%s: FIELD_KIND_CHANGED %s.%s (number %d) from %s to %s", dir, n, wf.GetName(), wf.GetNumber(), wf.GetType(), rf.GetType()))
			}
			if (rf.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED) != (wf.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED) {
				msgs = append(msgs, fmt.Sprintf("%s: FIELD_LABEL_CHANGED %s.%s (number %d)", dir, n, wf.GetName(), wf.GetNumber()))
			}
		}
	}
	return msgs
}

// wireGroup groups the field types whose encodings read as each other.
func wireGroup(t descriptorpb.FieldDescriptorProto_Type) int {
	switch t {
	case descriptorpb.FieldDescriptorProto_TYPE_INT32, descriptorpb.FieldDescriptorProto_TYPE_UINT32, descriptorpb.FieldDescriptorProto_TYPE_INT64,
		descriptorpb.FieldDescriptorProto_TYPE_UINT64, descriptorpb.FieldDescriptorProto_TYPE_BOOL:
		return 1
	case descriptorpb.FieldDescriptorProto_TYPE_SINT32, descriptorpb.FieldDescriptorProto_TYPE_SINT64:
		return 2
	case descriptorpb.FieldDescriptorProto_TYPE_FIXED32, descriptorpb.FieldDescriptorProto_TYPE_SFIXED32:
		return 3
	case descriptorpb.FieldDescriptorProto_TYPE_FIXED64, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64:
		return 4
	case descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_BYTES:
		return 5
	}
	return 100 + int(t)
}
