#include "eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/metrics.h"
#include "forward/t2i.h"
#include "forward/text.h"
#include "io/error.h"
#include "io/text_file.h"
#include "tokenizer/tokenizer.h"

namespace lq::eval {

namespace {

// Final-normed rows and logits of a plain causal token sequence.
std::vector<float> window_logits(const fwd::Engine& e, const std::vector<int32_t>& ids) {
  const int64_t n = int64_t(ids.size());
  if (n > e.config().max_position_embeddings)
    fail("eval", "window of " + std::to_string(n) + " tokens exceeds max_position_embeddings");
  const fwd::Chunk c = fwd::text_chunk(e, ids, fwd::text_positions(n), {fwd::Split{n, fwd::SplitMode::Causal}});
  const std::vector<float> normed = e.forward(c, nullptr, fwd::CacheWrite::No);
  return e.logits(normed.data(), n);
}

int64_t scored_columns(const fwd::Engine& e, int64_t vocab_limit) {
  const int64_t vocab = e.config().vocab_size;
  return vocab_limit > 0 && vocab_limit < vocab ? vocab_limit : vocab;
}

void check_same_architecture(const fwd::Engine& a, const fwd::Engine& b) {
  const auto &ca = a.config(), &cb = b.config();
  if (ca.hidden_size != cb.hidden_size || ca.vocab_size != cb.vocab_size || a.num_layers() != b.num_layers() ||
      ca.latent_channels != cb.latent_channels)
    fail("eval", "BASE and QUANT have different architectures (hidden, vocab, layers or latent channels differ)");
}

// The velocity the sampler integrates at (x, tau): cond, or CFG-combined inside the CFG interval.
std::vector<float> guided_velocity(fwd::T2iSampler& s, const std::vector<float>& x, double tau,
                                   const fwd::SamplerOptions& o, bool* cfg_active) {
  std::vector<float> v = s.velocity(true, x.data(), tau);
  *cfg_active = o.cfg_scale != 1.0 && tau > o.cfg_min && tau <= o.cfg_max;
  if (*cfg_active) v = fwd::cfg_combine(v, s.velocity(false, x.data(), tau), o.cfg_scale);
  return v;
}

// Observer on BASE: applies the BASE and QUANT weights of each linear to the same input rows.
class LinearErrorObserver final : public fwd::ActivationObserver {
 public:
  LinearErrorObserver(const fwd::Engine& base, const fwd::Engine& quant, const formats::FoldScaleMap& folds)
      : base_(base), quant_(quant), folds_(folds) {}
  void observe(const fwd::LinearId& id, const float* x, int64_t n, int64_t in) override {
    const fwd::LinearWeights &wb = base_.linear(id), &wq = quant_.linear(id);
    const int64_t out = wb.out_features();
    if (wq.out_features() != out || wq.in_features() != in)
      fail(fwd::linear_module_name(id), "QUANT linear has a different shape than BASE");
    std::vector<float> yb(size_t(n * out)), yq(size_t(n * out));
    wb.apply(x, n, yb.data());
    apply_in_original_basis(fwd::linear_module_name(id), wq, x, n, in, yq.data());
    Acc& a = acc_[key(id)];
    a.id = id;
    a.rows += n;
    for (size_t i = 0; i < yb.size(); ++i) {
      const double d = double(yq[i]) - yb[i];
      a.err += d * d;
      a.ref += double(yb[i]) * yb[i];
    }
  }
  // QUANT's linear as the original one: input divided by its column fold, output by its row fold.
  void apply_in_original_basis(const std::string& name, const fwd::LinearWeights& wq, const float* x, int64_t n, int64_t in,
                               float* y) const {
    const auto it = folds_.find(name);
    if (it == folds_.end()) return wq.apply(x, n, y);
    const formats::FoldScales& f = it->second;
    const int64_t out = wq.out_features();
    if ((!f.col.empty() && int64_t(f.col.size()) != in) || (!f.row.empty() && int64_t(f.row.size()) != out))
      fail(name, "fold scales do not match the linear's shape");
    std::vector<float> xs(x, x + n * in);
    if (!f.col.empty())
      for (int64_t t = 0; t < n; ++t)
        for (int64_t c = 0; c < in; ++c) xs[size_t(t * in + c)] /= f.col[size_t(c)];
    wq.apply(xs.data(), n, y);
    if (!f.row.empty())
      for (int64_t t = 0; t < n; ++t)
        for (int64_t o = 0; o < out; ++o) y[t * out + o] /= f.row[size_t(o)];
  }

  std::vector<LinearError> results() const {
    std::vector<LinearError> out;
    for (const auto& [k, a] : acc_) {
      LinearError r{a.id, fwd::linear_module_name(a.id), a.rows, 0.0};
      r.rel_error = a.err == 0 ? 0.0 : a.ref == 0 ? INFINITY : std::sqrt(a.err / a.ref);
      out.push_back(r);
    }
    return out;
  }

 private:
  struct Acc {
    fwd::LinearId id;
    int64_t rows = 0;
    double err = 0, ref = 0;
  };
  static int key(const fwd::LinearId& id) {
    return (id.layer * fwd::kNumPaths + int(id.path)) * fwd::kNumLinearKinds + int(id.kind);
  }
  const fwd::Engine &base_, &quant_;
  const formats::FoldScaleMap& folds_;
  std::map<int, Acc> acc_;  // ordered by (layer, path, kind)
};

// Relative error of the residual stream per layer over rows [r0, r1).
std::vector<double> hidden_errors(const std::vector<float>& sb, const std::vector<float>& sq, int64_t L, int64_t H,
                                  int64_t r0, int64_t r1) {
  const int64_t states = int64_t(sb.size()) / (L * H);
  std::vector<double> out;
  for (int64_t s = 0; s < states; ++s) {
    const size_t off = size_t((s * L + r0) * H);
    out.push_back(relative_error(sb.data() + off, sq.data() + off, (r1 - r0) * H));
  }
  return out;
}

struct Progress {
  int64_t done = 0, total = 0;
  const EvalOptions& o;
  void tick(const std::string& stage) {
    ++done;
    if (o.progress) o.progress(done, total, stage);
  }
};

void finish_text_result(TextFileResult& r, std::vector<double>& kls, int64_t agree) {
  r.base_perplexity = perplexity(r.base_nll_sum, r.tokens_scored);
  r.quant_perplexity = perplexity(r.quant_nll_sum, r.tokens_scored);
  double sum = 0;
  for (double k : kls) sum += k;
  r.kl_mean = sum / double(kls.size());
  r.kl_p99 = percentile(kls, 0.99);
  r.kl_max = *std::max_element(kls.begin(), kls.end());
  r.top1_agreement = double(agree) / double(r.tokens_scored);
}

// Per-token KL values of every text file, kept for the pooled p99.
struct TextPass {
  TextFileResult result;
  std::vector<double> kls;
};

TextPass compare_text_collect(const fwd::Engine& base, const fwd::Engine& quant,
                              const std::vector<std::vector<int32_t>>& windows, int64_t vocab_limit,
                              const std::function<void()>& on_window) {
  TextPass p;
  const int64_t V = base.config().vocab_size, cols = scored_columns(base, vocab_limit);
  const bool same = &base == &quant;
  int64_t agree = 0;
  for (const auto& w : windows) {
    const std::vector<float> lb = window_logits(base, w);
    const std::vector<float> lq = same ? lb : window_logits(quant, w);
    for (size_t t = 0; t + 1 < w.size(); ++t) {
      const float *rb = lb.data() + t * size_t(V), *rq = lq.data() + t * size_t(V);
      p.result.base_nll_sum += token_nll(rb, cols, w[t + 1]);
      p.result.quant_nll_sum += token_nll(rq, cols, w[t + 1]);
      p.kls.push_back(kl_divergence(rb, rq, cols));
      agree += fwd::argmax_masked(rb, V, cols) == fwd::argmax_masked(rq, V, cols);
      ++p.result.tokens_scored;
    }
    ++p.result.windows;
    if (on_window) on_window();
  }
  if (p.result.tokens_scored == 0) fail("eval", "no tokens to score (windows shorter than 2 tokens)");
  finish_text_result(p.result, p.kls, agree);
  return p;
}

void evaluate_chat(const fwd::Engine& base, const fwd::Engine& quant, const tok::Tokenizer& tok,
                   const std::vector<std::string>& questions, const EvalOptions& o, UndResult& und, Progress& prog) {
  fwd::GreedyOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.vocab_limit = base.config().len_tokenizer;
  if (const auto end = tok.token_id("<|im_end|>")) g.stop_id = *end;
  double exact = 0, lev = 0, jac = 0;
  for (const auto& q : questions) {
    const std::vector<int32_t> prompt = tok.encode(fwd::chat_prompt(q));
    ChatItem item;
    item.question = q;
    const std::vector<int32_t> ab = fwd::greedy_decode(base, prompt, g);
    const std::vector<int32_t> aq = &base == &quant ? ab : fwd::greedy_decode(quant, prompt, g);
    item.base_answer = tok.decode(ab, true);
    item.quant_answer = tok.decode(aq, true);
    item.exact = ab == aq;
    item.levenshtein = levenshtein_similarity(item.base_answer, item.quant_answer);
    item.jaccard = word_jaccard(item.base_answer, item.quant_answer);
    exact += item.exact;
    lev += item.levenshtein;
    jac += item.jaccard;
    und.chat.push_back(std::move(item));
    prog.tick("chat");
  }
  const double n = double(questions.size());
  und.chat_exact_match = exact / n;
  und.chat_levenshtein = lev / n;
  und.chat_jaccard = jac / n;
}

// Both samplers for one caption: velocity comparison on BASE's trajectory, then the final latents.
// Returns BASE's trajectory (for the layer probe).
std::vector<float> evaluate_prompt(const fwd::Engine& base, const fwd::Engine& quant, const tok::Tokenizer& tok,
                                   const fwd::T2iSettings& t2i, const EvalOptions& o, GenPrompt& gp,
                                   std::vector<VelocityStep>& steps, Progress& prog) {
  const int64_t K = t2i.grid.tokens(), C = base.config().latent_channels, n = K * C;
  const fwd::T2iPrompt prompt = fwd::t2i_prompt(tok, gp.caption, t2i.instruction, t2i.grid);
  fwd::SamplerOptions so = o.sampler;
  so.on_step = nullptr;
  fwd::T2iSampler sb(base, prompt), sq(quant, prompt);
  const std::vector<float> noise = fwd::normal_noise(gp.seed, n);
  std::vector<float> trajectory;
  gp.base_latents = sb.sample(noise, so, &trajectory);
  gp.quant_latents = &base == &quant ? gp.base_latents : sq.sample(noise, so);
  const std::vector<double> taus = fwd::shifted_taus(so.steps, so.shift);
  for (int i = 0; i < so.steps; ++i) {
    const std::vector<float> x(trajectory.begin() + i * n, trajectory.begin() + (i + 1) * n);
    bool cfg = false;
    const std::vector<float> vb = guided_velocity(sb, x, taus[i], so, &cfg);
    const std::vector<float> vq = guided_velocity(sq, x, taus[i], so, &cfg);
    VelocityStep& s = steps[size_t(i)];
    s.step = i;
    s.tau = taus[i];
    s.cfg = cfg;
    s.cosine += cosine_similarity(vb.data(), vq.data(), n);
    s.rel_error += relative_error(vb.data(), vq.data(), n);
    prog.tick("t2i");
  }
  gp.latent_rel_error = relative_error(gp.base_latents.data(), gp.quant_latents.data(), n);
  gp.latent_psnr_db = psnr_db(gp.base_latents.data(), gp.quant_latents.data(), n,
                              data_range(gp.base_latents.data(), n));
  return trajectory;
}

void summarize_gen(GenResult& gen, int prompts, int buckets) {
  double cos_sum = 0, rel_sum = 0;
  gen.buckets.clear();
  for (int b = 0; b < buckets; ++b) gen.buckets.push_back({double(b) / buckets, double(b + 1) / buckets, 0, 0, 0});
  for (auto& s : gen.velocity) {
    s.cosine /= prompts;
    s.rel_error /= prompts;
    cos_sum += s.cosine;
    rel_sum += s.rel_error;
    const int b = std::clamp(int(s.tau * buckets), 0, buckets - 1);  // tau' = 1 joins the top bucket
    gen.buckets[size_t(b)].steps += prompts;
    gen.buckets[size_t(b)].cosine += s.cosine;
    gen.buckets[size_t(b)].rel_error += s.rel_error;
  }
  for (auto& b : gen.buckets)
    if (b.steps) {
      b.cosine /= b.steps / prompts;
      b.rel_error /= b.steps / prompts;
    }
  gen.velocity_cosine = cos_sum / double(gen.velocity.size());
  gen.velocity_rel_error = rel_sum / double(gen.velocity.size());
  double lat = 0, psnr = 0;
  for (const auto& p : gen.prompts) {
    lat += p.latent_rel_error;
    psnr += p.latent_psnr_db;
  }
  gen.latent_rel_error = lat / prompts;
  gen.latent_psnr_db = psnr / prompts;  // +inf when every prompt is identical
}

// Per-linear and per-layer error on one und probe (token ids) and one gen probe (a t2i sequence at
// a mid-trajectory latent).
LayerResult evaluate_layers(fwd::Engine& base, const fwd::Engine& quant, const formats::FoldScaleMap& folds,
                            const std::vector<int32_t>* und_ids,
                            const fwd::T2iPrompt* gen_prompt, const std::vector<float>* gen_x, double gen_tau) {
  LayerResult r;
  LinearErrorObserver obs(base, quant, folds);
  const int64_t H = base.config().hidden_size;
  auto run_probe = [&](const fwd::Chunk& c, int64_t r0, int64_t r1) {
    std::vector<float> sb, sq;
    base.set_observer(&obs);
    try {
      base.forward(c, nullptr, fwd::CacheWrite::No, &sb);
    } catch (...) {
      base.set_observer(nullptr);
      throw;
    }
    base.set_observer(nullptr);
    quant.forward(c, nullptr, fwd::CacheWrite::No, &sq);
    return hidden_errors(sb, sq, c.rows(), H, r0, r1);
  };
  if (und_ids) {
    const int64_t n = int64_t(und_ids->size());
    r.und_hidden_error = run_probe(fwd::text_chunk(base, *und_ids, fwd::text_positions(n), {{n, fwd::SplitMode::Causal}}), 0, n);
    r.und_rows = n;
  }
  if (gen_prompt && gen_x) {
    const fwd::Chunk c = fwd::full_branch_chunk(base, gen_prompt->cond, gen_prompt->vision_start, gen_prompt->vision_end,
                                                gen_prompt->grid, gen_x->data(), gen_tau);
    const int64_t r0 = int64_t(gen_prompt->cond.prefix_ids.size()) + 1, K = gen_prompt->grid.tokens();
    r.gen_hidden_error = run_probe(c, r0, r0 + K);
    r.gen_rows = K;
  }
  r.linears = obs.results();
  return r;
}

}  // namespace

std::vector<std::vector<int32_t>> text_windows(const std::vector<int32_t>& ids, int64_t window, int64_t max_tokens) {
  if (window < 2) fail("eval", "window must be >= 2 tokens");
  std::vector<std::vector<int32_t>> out;
  if (int64_t(ids.size()) < window) {
    if (ids.size() >= 2) out.push_back(ids);
    return out;
  }
  const int64_t max_windows = max_tokens > 0 ? std::max<int64_t>(1, max_tokens / window) : INT64_MAX;
  for (size_t b = 0; b + size_t(window) <= ids.size() && int64_t(out.size()) < max_windows; b += size_t(window))
    out.emplace_back(ids.begin() + long(b), ids.begin() + long(b + size_t(window)));
  return out;
}

TextFileResult compare_text(const fwd::Engine& base, const fwd::Engine& quant,
                            const std::vector<std::vector<int32_t>>& windows, int64_t vocab_limit,
                            const std::function<void()>& on_window) {
  return compare_text_collect(base, quant, windows, vocab_limit, on_window).result;
}

double engine_perplexity(const fwd::Engine& e, const std::vector<std::vector<int32_t>>& windows, int64_t vocab_limit) {
  const int64_t V = e.config().vocab_size, cols = scored_columns(e, vocab_limit);
  double nll = 0;
  int64_t count = 0;
  for (const auto& w : windows) {
    const std::vector<float> l = window_logits(e, w);
    for (size_t t = 0; t + 1 < w.size(); ++t, ++count) nll += token_nll(l.data() + t * size_t(V), cols, w[t + 1]);
  }
  return perplexity(nll, count);
}

std::vector<std::string> read_nonempty_lines(const std::string& path) {
  return io::nonempty_lines(io::read_text(path, "evaluation file"));
}

std::vector<std::string> read_chat_questions(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& [line_no, j] : io::read_jsonl_objects(path, "evaluation file")) {
    if (!j.contains("question") || !j["question"].is_string())
      fail(path + ":" + std::to_string(line_no), "expected an object with a string \"question\"");
    out.push_back(j["question"].get<std::string>());
  }
  return out;
}

EvalResult evaluate(fwd::Engine& base, const fwd::Engine& quant, const tok::Tokenizer& tok,
                    const fwd::T2iSettings& t2i, const EvalData& data, const EvalOptions& o) {
  check_same_architecture(base, quant);
  EvalResult res;
  const int64_t vocab_limit = base.config().len_tokenizer;

  // Load everything first so the progress total (and ETA) is known from the start.
  std::vector<std::vector<std::vector<int32_t>>> windows;
  for (const auto& f : data.text_files) {
    windows.push_back(text_windows(tok.encode(io::read_text(f, "evaluation file")), o.window, o.max_text_tokens));
    if (windows.back().empty()) fail(f, "text file has fewer than 2 tokens");
  }
  std::vector<std::string> questions, captions;
  if (!data.chat_file.empty()) {
    questions = read_chat_questions(data.chat_file);
    if (o.max_chat > 0 && int(questions.size()) > o.max_chat) questions.resize(size_t(o.max_chat));
    if (questions.empty()) fail(data.chat_file, "no chat prompts");
  }
  if (!data.t2i_file.empty()) {
    captions = read_nonempty_lines(data.t2i_file);
    if (o.max_t2i > 0 && int(captions.size()) > o.max_t2i) captions.resize(size_t(o.max_t2i));
    if (captions.empty()) fail(data.t2i_file, "no t2i prompts");
    fwd::check_latent_grid(t2i.grid, base.config());
  }
  Progress prog{0, 0, o};
  for (const auto& w : windows) prog.total += int64_t(w.size());
  prog.total += int64_t(questions.size()) + int64_t(captions.size()) * o.sampler.steps + 1;

  // Understanding: pooled over every text file.
  std::vector<double> all_kls;
  double nll_b = 0, nll_q = 0, agree = 0;
  for (size_t f = 0; f < windows.size(); ++f) {
    TextPass p = compare_text_collect(base, quant, windows[f], vocab_limit, [&] { prog.tick("text"); });
    p.result.path = data.text_files[f];
    for (const auto& w : windows[f]) p.result.tokens_total += int64_t(w.size());
    nll_b += p.result.base_nll_sum;
    nll_q += p.result.quant_nll_sum;
    agree += p.result.top1_agreement * double(p.result.tokens_scored);
    res.und.tokens_scored += p.result.tokens_scored;
    all_kls.insert(all_kls.end(), p.kls.begin(), p.kls.end());
    res.und.texts.push_back(p.result);
  }
  if (!windows.empty()) {
    res.has_und = true;
    res.und.base_perplexity = perplexity(nll_b, res.und.tokens_scored);
    res.und.quant_perplexity = perplexity(nll_q, res.und.tokens_scored);
    double s = 0;
    for (double k : all_kls) s += k;
    res.und.kl_mean = s / double(all_kls.size());
    res.und.kl_p99 = percentile(all_kls, 0.99);
    res.und.top1_agreement = agree / double(res.und.tokens_scored);
  }
  if (!questions.empty()) {
    res.has_chat = true;
    evaluate_chat(base, quant, tok, questions, o, res.und, prog);
  }

  // Generation.
  std::vector<float> probe_x;
  double probe_tau = 0;
  if (!captions.empty()) {
    res.has_gen = true;
    res.gen.grid = t2i.grid;
    res.gen.steps = o.sampler.steps;
    res.gen.velocity.assign(size_t(o.sampler.steps), VelocityStep{});
    for (size_t k = 0; k < captions.size(); ++k) {
      GenPrompt gp;
      gp.caption = captions[k];
      gp.seed = o.seed + k;
      const std::vector<float> traj = evaluate_prompt(base, quant, tok, t2i, o, gp, res.gen.velocity, prog);
      if (k == 0) {  // layer probe: the first prompt half-way through BASE's trajectory
        const int mid = o.sampler.steps / 2;
        const int64_t n = t2i.grid.tokens() * base.config().latent_channels;
        probe_x.assign(traj.begin() + mid * n, traj.begin() + (mid + 1) * n);
        probe_tau = fwd::shifted_taus(o.sampler.steps, o.sampler.shift)[size_t(mid)];
      }
      res.gen.prompts.push_back(std::move(gp));
    }
    summarize_gen(res.gen, int(captions.size()), o.tau_buckets);
  }

  // Per-layer / per-linear probes.
  const std::vector<int32_t>* und_probe = windows.empty() ? nullptr : &windows[0][0];
  std::vector<int32_t> chat_probe;
  if (!und_probe && !questions.empty()) {
    chat_probe = tok.encode(fwd::chat_prompt(questions[0]));
    und_probe = &chat_probe;
  }
  fwd::T2iPrompt gen_prompt;
  if (!captions.empty()) gen_prompt = fwd::t2i_prompt(tok, captions[0], t2i.instruction, t2i.grid);
  if (und_probe || !captions.empty()) {
    res.has_layers = true;
    res.layers = evaluate_layers(base, quant, o.quant_folds, und_probe, captions.empty() ? nullptr : &gen_prompt,
                                 captions.empty() ? nullptr : &probe_x, probe_tau);
  }
  prog.tick("layers");
  return res;
}

}  // namespace lq::eval
