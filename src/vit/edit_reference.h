// An edit's conditions as Lance builds them (data/datasets_custom/validation_dataset.py tiv2v_sample): the
// source frames give both a ViT reference block (modality 4; ViT transform at the ViT resolution Lance
// pairs with the VAE's) and a clean VAE block (modality 2), in that order in the user turn, followed by
// the instruction; the assistant turn holds the noise target (forward/gen_sequence.h edit_prompt).
// Lance always builds the ViT reference for edits; without a ViT the edit runs without it, which is a
// deviation callers must state (run refuses unless told --no-vit-reference).
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "forward/edit_source.h"
#include "forward/gen_sequence.h"
#include "forward/t2i.h"
#include "vae/wan_vae.h"
#include "vit/vit.h"

namespace lq::tok {
class Tokenizer;
}

namespace lq::vit {

// Lance's pairs (validation_dataset.py): VAE 256 -> ViT 224, 512 -> 448, 768 -> 672 (images),
// 480 -> 476, 640 -> 616 (videos). Other resolutions: 7/8 of it (the image pairs' rule) rounded to a
// multiple of 28, at least 28.
int edit_vit_resolution(int vae_resolution);

struct EditConditions {
  fwd::EncodedSource source;              // the clean VAE block
  std::optional<fwd::VitReference> vit;  // the ViT reference block; absent: no ViT given
  int vit_resolution = 0;
  int64_t vit_frames = 0;                 // frames fed to the ViT (after Lance's repeat rules)
};

// Reads the source once, VAE-encodes it (reparameterised sample seeded from `seed`) and, when `vit` is
// given, runs the ViT on the same frames at `vit_resolution` (0: edit_vit_resolution of the VAE's).
EditConditions edit_conditions(const vae::WanVae& vae, const Vit* vit, const fwd::EditSource& src, int vit_resolution,
                               uint64_t seed, bool show_progress);

// The edit's sequence (edit_prompt with the ViT block when there is one) and the sampler holding both
// CFG branches' prefilled prefixes. Checks the latent grid and the position limit of `e` (throws lq::Error).
struct EditJob {
  std::unique_ptr<fwd::ConditionedPrompt> prompt;
  std::unique_ptr<fwd::T2iSampler> sampler;
};
EditJob edit_job(const fwd::Engine& e, const tok::Tokenizer& tok, const std::string& instruction, const EditConditions& c);

}  // namespace lq::vit
