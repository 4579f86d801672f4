/*
 * Hangul through the PDF loader (stdlib/loader.h), apart from test_pdf.c because it needs a
 * font with Hangul glyphs, which many machines lack (Debian: fonts-noto-cjk, fonts-nanum):
 * without one mkpdf says so (exit 77) and this program is skipped, not test_pdf.
 */
#include <stdlib.h>

#include "error.h"
#include "loader.h"
#include "mkpdf.h"
#include "test.h"
#include "unicode.h"
#include "value.h"

TEST(hangul_text_in_order) {
    size_t n = 0;
    int st = 0;
    char *data = mkpdf_bytes("korean", &n, &st);
    if (data == NULL && st == 77)
        SKIP("no installed font has Hangul glyphs (Debian: fonts-noto-cjk or fonts-nanum)");
    if (data == NULL) printf("  %s did not make the PDF (status %d)\n", mkpdf_path(), st);
    CHECK(data != NULL);
    if (data == NULL) return;
    ctn_load_ctx c = {.source = "korean.pdf"};
    ctn_val *docs = ctn_val_arr();
    char err[256] = "";
    CHECK_EQ_INT(ctn_load_pdf(&c, data, n, docs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_val_len(docs), 1);
    const ctn_val *d = ctn_val_at(docs, 0);
    const char *t = d != NULL ? d->u.doc.text->u.str.p : NULL;
    CHECK_STR(t, "한국어 문서입니다.\n체인 엔진이 페이지를 읽습니다.");
    ctn_val_unref(docs);
    free(data);
}

int main(void) {
    if (mkpdf_init() != 0) return 1;
    RUN(hangul_text_in_order);
    mkpdf_cleanup();
    return test_summary();
}
