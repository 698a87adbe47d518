//! The machine steps as the validator reads them: their NIC, their services, their names.

use crate::scenario::tests::{err, load_text, GOOD};
use crate::scenario::*;

#[test]
fn machine_steps_name_their_nic_and_services() {
    let text = format!(
        "{GOOD}  - link: {{ up: false }}\n  - reset: true\n  - power_cycle: {{ off_for: 5s, services: {{ iscsi: 40s, dhcp: 20s }} }}\n  - qmp_event: RESET\n"
    );
    let s = load_text(&text).unwrap();
    let mac: MacAddr = "52:54:00:aa:00:01".parse().unwrap();
    let actions: Vec<String> = s
        .steps
        .iter()
        .map(|st| format!("{:?}", st.action))
        .collect();
    assert!(
        matches!(&s.steps[1].action, Action::Machine(MachineAction::Qmp(QmpAction::Link { mac: m, up: false })) if *m == mac),
        "the boot NIC by default: {actions:?}"
    );
    assert_eq!(s.steps[1].name, "link down on 52:54:00:aa:00:01");
    assert!(matches!(
        s.steps[2].action,
        Action::Machine(MachineAction::Qmp(QmpAction::Reset))
    ));
    match &s.steps[3].action {
        Action::Machine(MachineAction::PowerCycle { off_for, services }) => {
            assert_eq!(*off_for, std::time::Duration::from_secs(5));
            assert_eq!(
                services,
                &vec![
                    (Service::Dhcp, std::time::Duration::from_secs(20)),
                    (Service::Iscsi, std::time::Duration::from_secs(40)),
                ]
            );
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        s.steps[3].name,
        "power cut for 5s, dhcp back after 20s, iscsi back after 40s"
    );
    assert!(matches!(
        s.steps[4].action,
        Action::QmpEvent(QmpEventName::Reset)
    ));
    let e = err(&format!(
        "{GOOD}  - power_cycle: {{ off_for: 5s, services: {{ http: 11m }} }}\n"
    ));
    assert!(
        e.contains("`power_cycle.services.http` is 11m; it must be 1s to 10m"),
        "{e}"
    );
}
