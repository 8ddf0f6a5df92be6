import { CatalogModelSchema, ListModelsResponseSchema } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";
import { uploadVocabulary, vocabularyOf } from "../catalog/vocabulary-upload.js";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { table, usd } from "./format.js";
import { UsageError } from "./io.js";
import { embeddingDimensions, microUsd } from "./parse.js";

/** `admin models …`: the model catalog and its prices. */
export function addModelCommands(admin: Command, cli: AdminCommands): void {
  const models = cli.group(admin, "models", "the model catalog and its prices");
  cli.command(models, "list", "list the catalog", async (call) => {
    const response = await call.client.listModels({});
    call.print(
      () => protoJson(ListModelsResponseSchema, response),
      () =>
        table(
          ["ID", "NAME", "OWNED BY", "INPUT/1M", "OUTPUT/1M", "ENABLED", "USAGE"],
          response.models.map((model) => [
            model.id,
            model.displayName,
            model.ownedBy,
            usd(model.inputMicroUsdPerMillion),
            usd(model.outputMicroUsdPerMillion),
            model.enabled ? "yes" : "no",
            model.vocabularySha256 ? `counted (${model.vocabularySha256.slice(0, 12)})` : "bounded",
          ]),
        ),
    );
  });
  cli
    .command(models, "set", "add a model or change its prices", async (call) => {
      const id = call.args[0] as string;
      // Keep the names the model has unless new ones are given.
      const existing = (await call.client.listModels({})).models.find((model) => model.id === id);
      const { model } = await call.client.upsertModel({
        model: {
          id,
          displayName: (call.opts.displayName as string | undefined) ?? existing?.displayName ?? "",
          ownedBy: (call.opts.ownedBy as string | undefined) ?? existing?.ownedBy ?? "",
          inputMicroUsdPerMillion: call.opts.inputPrice as bigint,
          outputMicroUsdPerMillion: call.opts.outputPrice as bigint,
          enabled: call.opts.disabled !== true,
          // Kept unless given: 0 (or "none") serves only the model's own length.
          embeddingMinDimensions:
            (call.opts.embeddingMinDimensions as number | undefined) ?? existing?.embeddingMinDimensions ?? 0,
        },
      });
      call.print(
        () => protoJson(CatalogModelSchema, model),
        () =>
          `${model?.id}: input ${usd(model?.inputMicroUsdPerMillion ?? 0n)} and output ` +
          `${usd(model?.outputMicroUsdPerMillion ?? 0n)} per million tokens, ${model?.enabled ? "enabled" : "disabled"}\n`,
      );
    })
    .argument("<model-id>")
    .requiredOption("--input-price <micro-usd>", "micro-USD per million prompt tokens", microUsd)
    .requiredOption("--output-price <micro-usd>", "micro-USD per million completion tokens", microUsd)
    .option("--display-name <name>", "human-readable name")
    .option("--owned-by <publisher>", "the model's publisher")
    .option("--disabled", "keep the model in the catalog but refuse requests for it")
    .option(
      "--embedding-min-dimensions <n|none>",
      "an embedding model trained for Matryoshka shortening: the shortest `dimensions` served",
      embeddingDimensions,
    );
  cli
    .command(models, "delete", "remove a model from the catalog", async (call) => {
      const modelId = call.args[0] as string;
      await call.client.deleteModel({ modelId });
      call.print(
        () => ({ model_id: modelId, deleted: true }),
        () => `deleted ${modelId}\n`,
      );
    })
    .argument("<model-id>");
  cli
    .command(
      models,
      "vocabulary",
      "count a model's tokens on the coordinator with its vocabulary, taken from its GGUF",
      async (call) => {
        const modelId = call.args[0] as string;
        const file = call.args[1] as string | undefined;
        if (call.opts.clear === true) {
          if (file !== undefined) throw new UsageError("give a GGUF file or --clear, not both");
          const { model } = await call.client.clearModelVocabulary({ modelId });
          call.print(
            () => protoJson(CatalogModelSchema, model),
            () => `${modelId}: no vocabulary; usage is bounded from the text, not counted\n`,
          );
          return;
        }
        if (file === undefined) throw new UsageError("give the model's GGUF file (or --clear)");
        let bytes: Uint8Array;
        try {
          bytes = await vocabularyOf(file);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        const model = await uploadVocabulary(call.client, modelId, bytes);
        call.print(
          () => protoJson(CatalogModelSchema, model),
          () => `${modelId}: usage counted with vocabulary ${model?.vocabularySha256}\n`,
        );
      },
    )
    .argument("<model-id>")
    .argument("[gguf-file]", "the model file, or its vocabulary-only copy (weights are not sent)")
    .option("--clear", "take the vocabulary away (usage is then only bounded from the text)");
}
