/*
 * FAISS's side of bench/run_vsearch.sh: exact kNN with IndexFlatIP (the inner product, the
 * cosine on the unit vectors of the file) over the file bench/vsearch_bench.c writes
 * ("CTNVEC01", uint32 n, dim, nq, 0, n * dim floats, nq * dim floats). Built by the script
 * with g++ against Debian's libfaiss-dev, when it is installed.
 *
 *     faiss_knn FILE --config THREADS:BATCH ... [--k 10] [--reps 3] [--ids OUT]
 *
 * For each config: omp_set_num_threads(THREADS; 0: every CPU), every query searched in
 * calls of BATCH after an untimed pass, --reps timed passes, the median printed as one JSON
 * line in vsearch_bench's shape:
 *   {"impl":"faiss","dtype":"f32","threads":1,"batch":1,"ms_query":..,"ms_call":..,...}
 * --ids writes the first config's hits, nq * k int64 labels (= rows), for the recall check.
 */
#include <faiss/IndexFlat.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

static double now_ms() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static double cpu_ms() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void die(const char *msg) {
    fprintf(stderr, "faiss_knn: %s\n", msg);
    exit(1);
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: faiss_knn FILE --config THREADS:BATCH ... [--k K] [--reps R] [--ids OUT]");
    const char *path = argv[1], *ids_path = nullptr;
    std::vector<const char *> configs;
    int k = 10, reps = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0) configs.push_back(argv[i + 1]);
        else if (strcmp(argv[i], "--k") == 0) k = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--ids") == 0) ids_path = argv[i + 1];
        else die("unknown option");
    }
    if (configs.empty() || k < 1 || reps < 1) die("give --config THREADS:BATCH; k, reps >= 1");

    FILE *f = fopen(path, "rb");
    char magic[8];
    uint32_t head[4];
    if (f == nullptr) die("cannot open the vector file");
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "CTNVEC01", 8) != 0 ||
        fread(head, 4, 4, f) != 4)
        die("not a vector file of vsearch_bench gen (CTNVEC01)");
    const uint32_t n = head[0], dim = head[1], nq = head[2];
    std::vector<float> x((size_t)n * dim), q((size_t)nq * dim);
    if (fread(x.data(), 4, x.size(), f) != x.size() || fread(q.data(), 4, q.size(), f) != q.size())
        die("the vector file is shorter than its header says");
    fclose(f);

    faiss::IndexFlatIP index(dim);
    index.add(n, x.data());
    std::vector<float> dist((size_t)nq * k);
    /* idx_t: faiss::Index::idx_t in 1.7.3, faiss::idx_t later; ntotal is one in both. */
    std::vector<decltype(index.ntotal)> labels((size_t)nq * k);
    for (size_t c = 0; c < configs.size(); c++) {
        int threads, batch;
        if (sscanf(configs[c], "%d:%d", &threads, &batch) != 2 || threads < 0 || batch < 1)
            die("--config is THREADS:BATCH (1:1, 0:4)");
        omp_set_num_threads(threads ? threads : omp_get_num_procs());
        std::vector<double> ms, cpu;
        for (int r = 0; r <= reps; r++) { /* r = 0: the untimed pass */
            const double t0 = now_ms(), c0 = cpu_ms();
            for (uint32_t q0 = 0; q0 < nq; q0 += batch) {
                const uint32_t nb = q0 + batch <= nq ? batch : nq - q0;
                index.search(nb, q.data() + (size_t)q0 * dim, k, dist.data() + (size_t)q0 * k,
                             labels.data() + (size_t)q0 * k);
            }
            if (r > 0) ms.push_back(now_ms() - t0), cpu.push_back(cpu_ms() - c0);
            if (r == 0 && c == 0 && ids_path != nullptr) {
                std::vector<int64_t> out(labels.begin(), labels.end());
                FILE *o = fopen(ids_path, "wb");
                if (o == nullptr || fwrite(out.data(), 8, out.size(), o) != out.size() ||
                    fclose(o) != 0)
                    die("cannot write --ids");
            }
        }
        const double calls = (nq + batch - 1) / batch, med = median(ms);
        const double bytes = (double)n * dim * 4;
        printf("{\"impl\":\"faiss\",\"dtype\":\"f32\",\"threads\":%d,\"batch\":%d,\"n\":%u,"
               "\"dim\":%u,\"nq\":%u,\"k\":%d,\"ms_query\":%.4f,\"ms_call\":%.4f,"
               "\"cpu_ms_call\":%.4f,\"matrix_bytes\":%.0f,\"gb_s\":%.2f}\n",
               threads ? threads : omp_get_num_procs(), batch, n, dim, nq, k, med / nq,
               med / calls, median(cpu) / calls, bytes, bytes / (med / calls * 1e6));
        fflush(stdout);
    }
    return 0;
}
