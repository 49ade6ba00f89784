#include "vit/edit_reference.h"

#include <algorithm>
#include <cmath>

#include "forward/prompts.h"
#include "io/error.h"
#include "tokenizer/tokenizer.h"
#include "vit/x2t_input.h"

namespace lq::vit {

int edit_vit_resolution(int vae_resolution) {
  switch (vae_resolution) {
    case 256: return 224;
    case 512: return 448;
    case 768: return 672;
    case 480: return 476;
    case 640: return 616;
    default: break;
  }
  if (vae_resolution <= 0) fail("edit", "the VAE resolution must be positive");
  return std::max(28, int(std::lround(vae_resolution * 7.0 / 8.0 / 28.0)) * 28);
}

EditConditions edit_conditions(const vae::WanVae& vae, const Vit* vit, const fwd::EditSource& src, int vit_resolution,
                               uint64_t seed, bool show_progress) {
  const fwd::SourceFrames frames = fwd::read_edit_source(src);
  EditConditions c;
  c.source = fwd::encode_edit_source(vae, src, frames, seed, show_progress);
  if (!vit) return c;
  c.vit_resolution = vit_resolution > 0 ? vit_resolution : edit_vit_resolution(fwd::edit_vae_resolution(src, frames.vision_type));
  const MediaKind kind = frames.vision_type == "image" ? MediaKind::Image : MediaKind::Video;
  VitFeatures f = encode_frames(*vit, kind, frames.frames, c.vit_resolution, frames.path);
  c.vit_frames = f.frames;
  c.vit = fwd::VitReference{{f.merged_grid[0], f.merged_grid[1], f.merged_grid[2]}, std::move(f.rows)};
  return c;
}

EditJob edit_job(const fwd::Engine& e, const tok::Tokenizer& tok, const std::string& instruction, const EditConditions& c) {
  fwd::check_latent_grid(c.source.grid, e.config());
  std::optional<fwd::LatentGrid> vit_grid;
  if (c.vit) vit_grid = c.vit->grid;
  EditJob j;
  j.prompt = std::make_unique<fwd::ConditionedPrompt>(
      fwd::edit_prompt(tok, instruction, fwd::edit_instruction(c.source.vision_type), c.source.grid, vit_grid));
  for (const fwd::GenLayout* l : {&j.prompt->cond(), &j.prompt->uncond()})
    for (const auto& p : l->positions)
      for (int32_t v : p)
        if (v >= e.config().max_position_embeddings)
          fail("edit", "the sequence needs position " + std::to_string(v) + ", beyond max_position_embeddings = " +
                           std::to_string(e.config().max_position_embeddings));
  std::vector<const fwd::VitReference*> refs;
  if (c.vit) refs.push_back(&*c.vit);
  j.sampler = std::make_unique<fwd::T2iSampler>(e, j.prompt->sampler_prompt(), j.prompt->prefix_chunk(e, true, {&c.source.latents}, refs),
                                                j.prompt->prefix_chunk(e, false, {&c.source.latents}, refs));
  return j;
}

}  // namespace lq::vit
