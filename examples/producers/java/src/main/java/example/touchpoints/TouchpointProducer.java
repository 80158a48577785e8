package example.touchpoints;

import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Publishes touchpoint events (contract v1) to Kafka: one JSON object per record, UTF-8,
 * on the topic of its channel ({@code touchpoints.<channel>}).
 *
 * <p>The record key is a stable identifier of the customer (here the CRM id). The
 * processor does not trust keys, but keying by the customer keeps one customer's events in
 * order on one partition, which keeps journeys and late-event handling simple.
 *
 * <p>Arguments: bootstrap servers (default {@code localhost:9092}), topic prefix (default
 * {@code touchpoints.}), number of customers (default 10). Each customer gets a web page
 * view, a call-centre contact on a case, and an NPS answer about it.
 */
public final class TouchpointProducer {

    private TouchpointProducer() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "localhost:9092";
        String prefix = args.length > 1 ? args[1] : "touchpoints.";
        int customers = args.length > 2 ? Integer.parseInt(args[2]) : 10;

        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        // every record acknowledged by all in-sync replicas, retries without duplicates
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        config.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd");

        Instant now = Instant.now().truncatedTo(ChronoUnit.MILLIS);
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(config)) {
            for (int i = 0; i < customers; i++) {
                String crmId = "CRM-" + (10_000 + i);
                String email = "customer" + i + "@example.com";
                String caseId = "case-" + i;
                Instant start = now.minus(30, ChronoUnit.MINUTES).plusSeconds(i);

                sent.add(producer.send(new ProducerRecord<>(prefix + "web", crmId,
                    "{" + field("event_id", UUID.randomUUID().toString())
                        + "," + raw("occurred_at", Long.toString(start.toEpochMilli()))
                        + "," + field("type", "page_view")
                        + ",\"identifiers\":{" + field("crm_id", crmId) + "," + field("email", email) + "}"
                        + ",\"properties\":{" + field("path", "/help/billing") + "}"
                        + "}")));
                sent.add(producer.send(new ProducerRecord<>(prefix + "call_center", crmId,
                    "{" + field("event_id", UUID.randomUUID().toString())
                        + "," + field("occurred_at", start.plusSeconds(300).toString())
                        + "," + field("sent_at", Instant.now().toString())
                        + "," + field("type", "call")
                        + "," + field("channel", "call_center")
                        + ",\"identifiers\":{" + field("crm_id", crmId) + "}"
                        + "," + field("case_id", caseId)
                        + ",\"interaction\":{" + field("direction", "inbound")
                        + "," + raw("wait_seconds", "95") + "," + raw("resolved", "true") + "}"
                        + ",\"context\":{" + field("region", "eu-west") + "}"
                        + "}")));
                sent.add(producer.send(new ProducerRecord<>(prefix + "survey", crmId,
                    "{" + field("event_id", UUID.randomUUID().toString())
                        + "," + field("occurred_at", start.plusSeconds(900).toString())
                        + "," + field("type", "survey_response")
                        + ",\"identifiers\":{" + field("email", email) + "," + field("crm_id", crmId) + "}"
                        + "," + field("case_id", caseId)
                        + ",\"survey\":{" + field("metric", "nps") + "," + raw("score", Integer.toString(i % 11))
                        + "," + field("comment", "Quick \"fix\", thanks \u2014 really") + "}"
                        + "}")));
            }
            producer.flush();
            for (Future<RecordMetadata> result : sent) {
                result.get(); // surfaces any send that failed
            }
        }
        System.out.println("published " + sent.size() + " touchpoints to " + bootstrap);
    }

    /** A JSON member whose value is a string, escaped as JSON requires. */
    static String field(String name, String value) {
        return quote(name) + ":" + quote(value);
    }

    /** A JSON member whose value is already JSON (a number or a boolean). */
    static String raw(String name, String json) {
        return quote(name) + ":" + json;
    }

    static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
