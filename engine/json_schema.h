/*
 * JSON Schema to GBNF (grammar.h), in the manner of llama.cpp's json-schema-to-grammar: the
 * grammar matches JSON texts that satisfy the schema, with optional white space where JSON
 * allows it; and a validator of JSON texts against the same subset, which agrees with the
 * grammar: every text the grammar accepts validates.
 *
 *     char *gbnf, err[256];
 *     const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},"
 *                          "\"required\":[\"n\"]}";
 *     if (ctn_json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err) < 0) puts(err);
 *     else { puts(gbnf); free(gbnf); }            // root ::= "{" space root-n-kv "}" space ...
 *     const char *text = "{\"n\": 1.5}";
 *     if (ctn_json_schema_validate(schema, strlen(schema), text, strlen(text), err, sizeof err))
 *         puts(err);                              // at /n: 1.5 is not an integer
 *
 * The subset:
 *   - type: "object", "array", "string", "number", "integer", "boolean", "null", or a list
 *     of them (any of them); without type, the type its keywords imply (properties,
 *     required, additionalProperties: object; items, prefixItems, minItems, maxItems: array;
 *     minLength, maxLength, pattern, format: string), otherwise any JSON value. `true` (or
 *     {}) is any value.
 *   - properties, required (each required name must be a property): the required
 *     properties first, in the order written, then the optional ones in the order written,
 *     each present or not, as llama.cpp orders them. additionalProperties: false (the
 *     default when properties or required are given, as in llama.cpp), true or a schema:
 *     other keys, as many as come, after the declared ones; they are written without
 *     escapes and never spell a declared name. Without properties and required, any keys.
 *   - items (a schema for every element, or false), prefixItems (a tuple: as long as its
 *     prefixItems, as llama.cpp writes it, unless minItems / maxItems or items allow other
 *     lengths), minItems, maxItems (at most 2000).
 *   - minLength, maxLength on strings (in characters, that is code points).
 *   - pattern on strings: a regular expression matched against the whole string, anchored
 *     or not (llama.cpp converts only ^...$ patterns, matching them whole, and takes others
 *     as any string; JSON Schema would match an unanchored pattern anywhere, so the grammar
 *     and this validator are stricter there).
 *     The regex subset: literal characters, escapes of punctuation, \n \t \r \f, \xHH,
 *     \uHHHH, classes [...] and [^...] with ranges, \d \w \s \D \W \S (ASCII, as PCRE2
 *     reads them), `.` (any character but \n and \r), groups (...) and (?:...),
 *     alternation |, repetition ? * + {m} {m,} {m,n} (lazy forms taken as the same), a
 *     leading ^ and a final $. Refused with the byte offset in the pattern: lookaround,
 *     named groups, flags, backreferences, \b \B and other escapes, anchors elsewhere,
 *     possessive repetition, [] and [^], a repetition of what can match the empty string
 *     (left recursion in GBNF), a class none of whose characters a JSON string can hold raw
 *     or by a short escape, and patterns over 200000 grammar elements once repeated.
 *   - format on strings: date, time, date-time, uuid, as llama.cpp writes them (date
 *     YYYY-MM-DD with month 01-12 and day 01-31; time hh:mm:ss[.sss] then Z or +hh:mm /
 *     -hh:mm; date-time the two with T between; uuid 8-4-4-4-12 hexadecimal digits). Any
 *     other format is refused by name, on any type.
 *   - integer bounds: minimum, maximum, exclusiveMinimum, exclusiveMaximum (within +-1e15),
 *     written as digit ranges as llama.cpp does. Bounds on "number" are refused (llama.cpp
 *     drops them), as are bounds without a type.
 *   - enum and const: the values exactly as JSON writes them (cJSON's form: no spaces,
 *     numbers as it prints them), those of the type beside them if there is one; any other
 *     keyword beside them (and const beside enum) is refused.
 *   - anyOf and oneOf: alternatives (oneOf as anyOf, as llama.cpp has it: the validator
 *     takes it the same way, so a text matching two alternatives is valid); nothing but
 *     annotations beside them.
 *   - allOf: the object schemas it lists (and the schema's own properties / required beside
 *     it) merged as llama.cpp merges them: properties in order, required names together (a
 *     property required in one part is required in the merge; llama.cpp would make every
 *     property of a part required). A part that is not an object schema (through $ref), or
 *     a property two parts give different schemas, is refused.
 *   - $ref to "#", "#/$defs/NAME" and "#/definitions/NAME" (NAME as a JSON pointer token),
 *     with nothing but annotations beside it; references may recurse through an object or
 *     an array (GBNF rules recurse), not before one (left recursion is refused). References
 *     to other documents and to other pointers are refused by name.
 *   - title, description, default, examples, $schema, $id, $comment, $defs, definitions are
 *     read and ignored ($defs and definitions are where references look).
 * Any other keyword (not, if/then/else, patternProperties, propertyNames, min/maxProperties,
 * uniqueItems, contains, multipleOf, dependentRequired, unevaluated*, ...) is refused with
 * its path: "schema at /properties/age: 'uniqueItems' is not supported"; so are the
 * combinations the grammar cannot express (pattern beside minLength or format, format beside
 * a length, ...). Errors name the schema path (a JSON pointer) and the keyword.
 *
 * The grammar's strings never hold a \u escape of a surrogate or of U+0000, so that cJSON
 * reads every sentence back as it was written.
 *
 * Memory: allocations go through the allocation hook (alloc.h), PCRE2's too; *gbnf is the
 * caller's to free().
 */
#ifndef CTN_JSON_SCHEMA_H
#define CTN_JSON_SCHEMA_H

#include <stddef.h>

#include "error.h"

/* Converts the n bytes of JSON at schema. 0 with *gbnf (NUL-terminated, malloc'd);
 * CTN_EINVAL (not JSON, not an object or boolean, or outside the subset: err says where and
 * why) or CTN_ENOMEM; then *gbnf is NULL. */
int ctn_json_schema_to_gbnf(const char *schema, size_t n, char **gbnf, char *err, size_t errlen);

/* Validates the jn bytes of JSON at json against the n bytes of schema at schema. 0 when
 * it is valid; CTN_EINVAL when it is not ("at /age: 17 is less than the minimum 18"), when
 * it is not JSON ("not JSON at byte 12: near '...'"), or when the schema is refused (err as
 * ctn_json_schema_to_gbnf writes it); CTN_ENOMEM. Both texts are borrowed for the call. */
int ctn_json_schema_validate(const char *schema, size_t n, const char *json, size_t jn, char *err,
                             size_t errlen);

#endif
