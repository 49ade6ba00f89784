// Mixed precision under a bit budget: the bits counted per format equal the quantizers' own payload
// accounting, the solver respects the budget exactly as counted and leaves no affordable improving
// move, the plan round-trips through JSON, and `quantize --bpw` on lance-mini writes a checkpoint whose
// per-linear formats are the stored plan's and whose bits per weight are within the budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/checkpoint.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "pipeline/bit_plan.h"
#include "quant/quantizer.h"
#include "test_paths.h"
#include "test_random.h"

namespace lq::pipeline {
namespace {

namespace fs = std::filesystem;

TEST(BitPlan, CountedBitsAreThePayloadOfTheQuantizedTensor) {
  const int64_t out = 48, in = 256;
  const std::vector<float> w = lq::test::gaussian(size_t(out * in), 0.05f, 3);
  for (const auto& c : bit_candidates(parse_scheme_choice("awq-int4", 64, false), false)) {
    const uint64_t bits = linear_bits(c.format, out, in);
    if (c.format.keep) {
      EXPECT_EQ(bits, 16u * out * in);
      continue;
    }
    const quant::QTensor q = quant::quantize(w.data(), out, in, c.format.params);
    EXPECT_EQ(bits, 8 * q.payload_bytes()) << c.label;
  }
  // The documented figures: INT4 g128 / g64 / g32 and INT8 g128 with bf16 scales and 4-bit zeros.
  const auto cand = bit_candidates(parse_scheme_choice("awq-int4", 64, false), false);
  ASSERT_EQ(cand.size(), 5u);
  const double expect[] = {4.15625, 4.3125, 4.625, 8.125, 16.0};
  for (size_t i = 0; i < cand.size(); ++i) EXPECT_DOUBLE_EQ(double(linear_bits(cand[i].format, out, in)) / double(out * in), expect[i]);
  const auto fp4 = bit_candidates(parse_scheme_choice("nvfp4", 64, false), false);
  EXPECT_EQ(fp4.front().label, "nvfp4");
  EXPECT_EQ(linear_bits(fp4.front().format, out, in), uint64_t(out * in * 4 + out * in / 16 * 8 + 32));
}

BitPlan random_plan(uint32_t seed, int n) {
  BitPlan p;
  p.candidates = bit_candidates(parse_scheme_choice("rtn-int4", 64, false), false);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.1, 10.0);
  const int64_t shapes[][2] = {{256, 256}, {128, 256}, {768, 256}, {256, 768}};
  for (int i = 0; i < n; ++i) {
    BitPlanLinear l;
    l.name = "linear" + std::to_string(i);
    const auto& s = shapes[i % 4];
    l.weights = s[0] * s[1];
    const double base = u(rng);
    // Sensitivity falls with bits (roughly 4x per extra bit of resolution), with noise.
    const double factor[] = {1.3, 1.0, 0.62, 0.004, 0.0};
    for (size_t c = 0; c < p.candidates.size(); ++c) {
      l.bits.push_back(linear_bits(p.candidates[c].format, s[0], s[1]));
      l.sensitivity.push_back(base * factor[c] * (c < 4 ? u(rng) / 5.0 + 0.5 : 0.0));
    }
    p.linears.push_back(l);
  }
  return p;
}

TEST(BitPlan, SolverRespectsTheBudgetExactlyAndLeavesNoAffordableImprovement) {
  for (double budget : {4.25, 4.3, 4.5, 5.0, 6.0, 9.0}) {
    BitPlan p = random_plan(7, 40);
    p.linears[1].fixed = true;  // a --keep linear: bf16 whatever the budget, counted at 16 bits
    p.budget_bpw = budget;
    solve_bit_plan(p);
    EXPECT_LE(static_cast<long double>(p.total_bits()), static_cast<long double>(budget) * p.total_weights()) << budget;
    EXPECT_LE(p.average_bpw(), budget);
    EXPECT_EQ(p.candidates[size_t(p.linears[1].chosen)].label, "bf16");
    // Local optimality: no single upgrade that lowers the sensitivity still fits.
    for (const auto& l : p.linears) {
      if (l.fixed) continue;
      for (size_t c = 0; c < p.candidates.size(); ++c)
        if (l.bits[c] > l.bits[size_t(l.chosen)] && l.sensitivity[c] < l.sensitivity[size_t(l.chosen)]) {
          EXPECT_GT(static_cast<long double>(p.total_bits() - l.bits[size_t(l.chosen)] + l.bits[c]),
                    static_cast<long double>(budget) * p.total_weights())
              << l.name << " could still take " << p.candidates[c].label << " at budget " << budget;
        }
    }
  }
  // A budget below the cheapest plan is refused, naming the cheapest average.
  BitPlan p = random_plan(8, 10);
  p.budget_bpw = 4.0;
  try {
    solve_bit_plan(p);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("below the cheapest plan (4.1562"), std::string::npos) << e.what();
  }
}

TEST(BitPlan, SolverMatchesBruteForceOnSmallPlans) {
  // The DP is exact up to its 1/50,000 budget steps: it matches the exhaustive optimum.
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    BitPlan p = random_plan(seed, 6);
    p.budget_bpw = 4.3 + 0.4 * seed;
    solve_bit_plan(p);
    double greedy = 0;
    for (const auto& l : p.linears) greedy += l.sensitivity[size_t(l.chosen)];
    double best = 1e300;
    std::vector<int> idx(p.linears.size(), 0);
    for (;;) {
      uint64_t bits = 0;
      double s = 0;
      for (size_t i = 0; i < idx.size(); ++i) bits += p.linears[i].bits[size_t(idx[i])], s += p.linears[i].sensitivity[size_t(idx[i])];
      if (static_cast<long double>(bits) <= static_cast<long double>(p.budget_bpw) * p.total_weights()) best = std::min(best, s);
      size_t k = 0;
      while (k < idx.size() && ++idx[k] == int(p.candidates.size())) idx[k++] = 0;
      if (k == idx.size()) break;
    }
    EXPECT_LE(greedy, best * (1 + 1e-9)) << "seed " << seed;
  }
}

TEST(BitPlan, JsonRoundTrip) {
  BitPlan p = random_plan(9, 12);
  p.budget_bpw = 4.5;
  solve_bit_plan(p);
  const BitPlan q = BitPlan::from_json(nlohmann::json::parse(p.to_json().dump()), "test");
  ASSERT_EQ(q.linears.size(), p.linears.size());
  EXPECT_EQ(q.budget_bpw, p.budget_bpw);
  EXPECT_EQ(q.total_bits(), p.total_bits());
  for (size_t i = 0; i < p.linears.size(); ++i) {
    EXPECT_EQ(q.linears[i].name, p.linears[i].name);
    EXPECT_EQ(q.linears[i].chosen, p.linears[i].chosen);
    EXPECT_EQ(q.linears[i].bits, p.linears[i].bits);
  }
  EXPECT_THROW(BitPlan::from_json(nlohmann::json::parse(R"({"budget_bpw": 4})"), "x"), Error);
}

std::string quantize_cmd(const std::string& args) { return test::exe() + " quantize " + args + " 2>&1"; }

TEST(BitPlanCli, PlanIsPrintedStoredAndTheCheckpointFollowsItWithinTheBudget) {
  LQ_REQUIRE_SHARED();
  const std::string m = test::lance_mini_dir(), d = test::scratch_dir("bit_plan_cli");
  const std::string calib = " --calib text:" + std::string(LQ_SOURCE_DIR) + "/data/calib/text.txt --calib t2i:" + m +
                            "/calib_prompts.txt --max-tokens 512 --max-prompts 2 --steps 4 --t2i-taus 2 --awq-rows 256";
  std::string out;
  ASSERT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --bpw 4.5 --keep layers.0.self_attn.k_proj_moe_gen" + calib +
                                           " --out " + d + "/q"), &out), 0) << out;
  EXPECT_NE(out.find("bit plan:"), std::string::npos) << out;
  const std::optional<BitPlan> plan = read_bit_plan(d + "/q");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->budget_bpw, 4.5);
  EXPECT_LE(plan->average_bpw(), 4.5);
  EXPECT_GT(plan->average_bpw(), 4.3);  // the budget is used, not left idle
  // The checkpoint holds exactly the plan's formats, and its bits as counted are the plan's.
  const formats::CheckpointReader r(d + "/q");
  std::map<std::string, std::string> labels;
  int kinds = 0;
  std::set<std::string> used;
  for (const auto& l : plan->linears) {
    const std::string f = plan->candidates[size_t(l.chosen)].label;
    used.insert(f);
    if (f == "bf16") {
      EXPECT_FALSE(r.is_quantized(l.name)) << l.name;
      continue;
    }
    ASSERT_TRUE(r.is_quantized(l.name)) << l.name;
    const quant::QTensor q = r.read_quantized(l.name);
    const FormatSpec want = parse_format_spec(f, 128, false, "test");
    EXPECT_EQ(q.scheme, want.params.scheme) << l.name;
    EXPECT_EQ(q.group, want.params.effective_group(q.in)) << l.name;
    EXPECT_EQ(8 * q.payload_bytes(), l.bits[size_t(l.chosen)]) << l.name;
    ++kinds;
  }
  EXPECT_GE(used.size(), 2u) << "a 4.5-bit budget mixes formats";
  const auto kept = std::find_if(plan->linears.begin(), plan->linears.end(),
                                 [](const BitPlanLinear& l) { return l.name.find("layers.0.self_attn.k_proj_moe_gen") != std::string::npos; });
  ASSERT_NE(kept, plan->linears.end());
  EXPECT_TRUE(kept->fixed);
  EXPECT_FALSE(r.is_quantized(kept->name));
  EXPECT_DOUBLE_EQ(target_bits_per_weight(d + "/q", m), plan->average_bpw());

  // Refusals before the slow pass.
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --bpw 4.5 --format autoawq" + calib + " --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("--bpw"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --bpw 4.5 --override down_proj=int8" + calib + " --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("--override"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(quantize_cmd(m + " --scheme rtn-int4 --bpw 3.9" + calib + " --out " + d + "/a"), &out), 1);
  EXPECT_NE(out.find("below the cheapest plan"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/a"));
}

}  // namespace
}  // namespace lq::pipeline
